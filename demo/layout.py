"""The page: the header, the "what am I looking at" panel and the two tabs (single image, batch),
as components with no events attached (:mod:`prnseg.demo.events` wires them to the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prnseg.demo import render, text
from prnseg.demo._gr import gr
from prnseg.demo.core import BATCH_HEADERS, BATCH_MAX_FILES, TABLE_HEADERS, DemoCore
from prnseg.demo.sessions import SESSION_MAX_AGE_S
from prnseg.demo.uploads import ACCEPTED, example_images


@dataclass
class SingleTab:
    """The single-image tab's components."""
    state: Any
    image_in: Any
    run_btn: Any
    example_box: Any    # None without bundled examples
    label_file: Any
    noise_file: Any
    annotated: Any
    noise_img: Any
    compare: Any
    diff_img: Any
    conf_img: Any
    opacity: Any
    threshold: Any
    status: Any
    table: Any


@dataclass
class BatchTab:
    """The batch tab's components."""
    files: Any
    run_btn: Any
    status: Any
    zip: Any
    gallery: Any
    noise_gallery: Any
    table: Any


@dataclass
class Page:
    single: SingleTab
    batch: BatchTab


def build_page(core: DemoCore) -> Page:
    """The components, created inside the caller's ``gr.Blocks``."""
    gr.Markdown("## prnseg · domain-adapted segmentation with pseudo-label refinement\n" + text.model_line(core))
    with gr.Accordion("What am I looking at?", open=True, elem_id="explain"):
        gr.Markdown(text.explanation(core))
    with gr.Tabs():
        with gr.Tab("Single image", id="single"):
            single = _single_tab(core)
        with gr.Tab("Batch", id="batch"):
            batch = _batch_tab(core)
    return Page(single, batch)


def _single_tab(core: DemoCore) -> SingleTab:
    state = gr.State(None, time_to_live=SESSION_MAX_AGE_S)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            inputs = _single_inputs()
        with gr.Column(scale=3, min_width=480):
            views = _single_views(core)
            with gr.Row():
                opacity = gr.Slider(0.0, 1.0, value=0.55, step=0.05, label="Overlay opacity",
                                    info="of the class colours and the noise tint")
                threshold = gr.Slider(0.0, 1.0, value=round(core.noise_threshold, 2), step=0.01,
                                      label="Noise threshold",
                                      info="pixels whose noise probability is at least this are flagged")
            status = gr.Markdown(text.READY_STATUS, elem_id="status")
    table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "number", "number"],
                         label="Per class (largest first; noisy share at the current threshold)",
                         interactive=False, max_height=320, elem_id="class-table")
    return SingleTab(state=state, **inputs, **views, opacity=opacity, threshold=threshold, status=status,
                     table=table)


def _single_inputs() -> dict[str, Any]:
    """The left column: the upload, the button, the examples and the two downloads."""
    examples = [[str(p)] for p in example_images()]
    image_in = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                        label="Target-domain image", height=280, elem_id="input-image")
    run_btn = gr.Button("Segment", variant="primary", elem_id="run")
    example_box = None
    if examples:
        example_box = gr.Examples(examples, inputs=[image_in], examples_per_page=len(examples),
                                  label="Examples: synthetic target-domain scenes (day and "
                                        "night); a click runs one", elem_id="examples")
    label_file = gr.File(label="Label PNG (palette PNG: pixel values are trainIds)",
                         interactive=False, height=110, elem_id="label-file", visible=False)
    noise_file = gr.File(label="Noise PNG at the current threshold (255 = noisy)",
                         interactive=False, height=110, elem_id="noise-file", visible=False)
    return dict(image_in=image_in, run_btn=run_btn, example_box=example_box, label_file=label_file,
                noise_file=noise_file)


def _single_views(core: DemoCore) -> dict[str, Any]:
    """The right column's tabs: segmentation, noise mask, PRN changes, confidence."""
    colour_map = {name: render.hex_colour(c) for name, c in zip(core.spec.classes, core.spec.palette)}
    with gr.Tabs():
        with gr.Tab("Segmentation"):
            annotated = gr.AnnotatedImage(label=core.label_title + " · hover a class to "
                                          "highlight it", color_map=colour_map, format="png",
                                          height=400, elem_id="segmentation")
        with gr.Tab("Noise mask"):
            noise_img = gr.Image(label="Pixels flagged noisy (magenta)", format="png",
                                 interactive=False, height=400, elem_id="noise")
        sides, changed_by = (("single pass", "averaged"), "averaging") if core.tta else (("raw labels", "refined"),
                                                                                         "the PRN")
        with gr.Tab(core.changes_title, visible=core.refines, elem_id="prn-changes"):
            compare = gr.ImageSlider(label=f"Teacher's {sides[0]} (left) vs {sides[1]} (right)",
                                     format="png", interactive=False, max_height=300)
            diff_img = gr.Image(label=f"Pixels {changed_by} relabelled, in their {sides[1]} class colour",
                                format="png", interactive=False, height=300, elem_id="diff")
        with gr.Tab("Confidence"):
            conf_img = gr.Image(label="Confidence of the label (max softmax), auto-contrast: "
                                      "the scale below gives the values",
                                format="png", interactive=False, height=400,
                                elem_id="confidence")
    return dict(annotated=annotated, noise_img=noise_img, compare=compare, diff_img=diff_img, conf_img=conf_img)


def _batch_tab(core: DemoCore) -> BatchTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            files = gr.File(file_count="multiple", label="Images", elem_id="batch-files")
            run_btn = gr.Button("Segment all", variant="primary", elem_id="run-batch")
            status = gr.Markdown(f"Up to {BATCH_MAX_FILES} images ({ACCEPTED}) per run; they "
                                 f"go through the model {core.spec.max_batch} at a time.")
            zip_file = gr.File(label="Label and noise PNGs (zip)", interactive=False)
        with gr.Column(scale=3):
            gallery = gr.Gallery(label=core.label_title, columns=2, height="auto", format="png",
                                 object_fit="contain", elem_id="batch-gallery",
                                 elem_classes=["street-gallery"])
            noise_gallery = gr.Gallery(label="Noise mask (magenta)", columns=2, height="auto", format="png",
                                       object_fit="contain", elem_classes=["street-gallery"])
            table = gr.Dataframe(headers=BATCH_HEADERS, label="Per image", interactive=False)
    return BatchTab(files=files, run_btn=run_btn, status=status, zip=zip_file, gallery=gallery,
                    noise_gallery=noise_gallery, table=table)
