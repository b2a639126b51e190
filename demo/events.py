"""The page's events: which core method answers which component, on which queue.

Every model call shares one queue slot (``concurrency_id="model"``) so one GPU is never
oversubscribed; the sliders re-render from the cached prediction on their own slots.
"""

from __future__ import annotations

from prnseg.demo._gr import gr
from prnseg.demo.core import DemoCore
from prnseg.demo.layout import Page


def wire(core: DemoCore, page: Page) -> None:
    """Attach the handlers (inside the caller's ``gr.Blocks``)."""
    s, b = page.single, page.batch
    views = [s.annotated, s.noise_img, s.compare, s.diff_img, s.conf_img, s.table, s.status, s.noise_file]
    outputs = [*views, s.label_file, s.state]
    inputs = [s.image_in, s.opacity, s.threshold]
    s.image_in.upload(core.check_upload, [s.image_in], [s.status], api_visibility="private", concurrency_limit=None,
                      preprocess=False)
    run = s.run_btn.click(core.segment, inputs, outputs, preprocess=False,
                          api_name="segment", concurrency_id="model", concurrency_limit=1)
    runs = [run]
    if s.example_box is not None:
        runs.append(s.example_box.load_input_event.then(core.segment, inputs, outputs,
                                                        preprocess=False, api_visibility="private",
                                                        concurrency_id="model", concurrency_limit=1))
    for event in runs:  # the download boxes show only with a result
        event.success(lambda: [gr.update(visible=True)] * 2, None, [s.label_file, s.noise_file],
                      api_visibility="private", queue=False)
        event.failure(core.failed, None, outputs, api_visibility="private", queue=False)
    for slider in (s.opacity, s.threshold):
        slider.release(core.render, [s.state, s.opacity, s.threshold], views, api_visibility="private",
                       concurrency_id="render", concurrency_limit=2, trigger_mode="always_last")
    b.run_btn.click(core.segment_batch, [b.files], [b.gallery, b.noise_gallery, b.table, b.status, b.zip],
                    api_name="segment_batch", batch=True, max_batch_size=max(1, core.spec.max_batch),
                    concurrency_id="model", concurrency_limit=1)
