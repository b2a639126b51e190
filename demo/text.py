"""The demo's words: the model line, the "what am I looking at" panel and the status lines,
worded for what this model writes. No Gradio here; ``core`` is a :class:`~prnseg.demo.core.DemoCore`."""

from __future__ import annotations

import numpy as np

from prnseg.demo import render

READY_STATUS = "Upload an image or pick an example (a click runs it), then press **Segment**."
# An image whose area is below this share of the model's input is upscaled a lot: say so.
SMALL_IMAGE_SHARE = 1 / 16


def model_line(core) -> str:
    """One line under the title: the model, its checkpoint, classes, buckets, noise source, runtime."""
    spec = core.spec
    ckpt = spec.raw.get("checkpoint") or {}
    parts = [f"**model** `{spec.name}`"]
    if ckpt.get("arch") or ckpt.get("config"):
        parts.append(f"{ckpt.get('arch', '?')} / {ckpt.get('config', '?')}")
    if ckpt.get("iteration") is not None:
        parts.append(f"iteration {ckpt['iteration']}")
    parts.append(f"{len(spec.classes)} classes")
    parts.append("buckets " + ", ".join(f"{b.height}×{b.width}" for b in spec.buckets))
    parts.append("test-time augmentation: noise = low averaged confidence" if core.tta
                 else "noise mask from the PRN" if spec.noise_source == "prn"
                 else "noise = low confidence" if core.has_prn else "no PRN: noise = low confidence")
    parts.append(f"runs on {core.predictor.provider}")
    return " · ".join(parts)


def explanation(core) -> str:
    """The "what am I looking at" panel, worded for what this model writes."""
    if core.tta:
        adjusted = (f", each class's score lowered by its share of the target (logit adjustment, tau "
                    f"{core.logit_adjustment:g}) so rare classes keep the pixels the teacher nearly gives them"
                    if core.logit_adjustment else "")
        labels = ("**Segmentation**: the class of every pixel, as the adapted model (the EMA teacher) predicts it "
                  f"averaged over 3 scales and their mirrors{adjusted} (`--tta`: six passes, the labels "
                  "`prnseg label --tta` writes). **TTA changes** shows the pixels where that differs from the "
                  "single pass.")
    elif core.refines:
        labels = ("**Segmentation**: the class of every pixel, as the PRN (pseudo-label refinement network) "
                  "refined the teacher's prediction. **PRN changes** shows the pixels where it changed the "
                  "teacher's class.")
    else:
        labels = ("**Segmentation**: the class of every pixel, as the adapted model (the EMA teacher) predicts "
                  "it. This model does not refine its labels (it was trained with `prn.use_refined_labels=false`), "
                  "so there is no PRN-changes view" + (": the PRN only flags noisy pixels." if core.noise_from_prn
                                                        else "."))
    noise = ("1 − the averaged confidence (with `--tta` it ranks errors better than the PRN's mask)" if core.tta
             else "the PRN's estimate that a pixel's label is wrong" if core.noise_from_prn
             else "1 − the label's confidence (exported with `--noise-from confidence`: it ranks errors better "
                  "than the PRN's noise head)" if core.has_prn
             else "1 − the model's confidence (this model has no PRN)")
    return (
        "This model was adapted from labelled synthetic or game images (the *source*) to a new domain without its "
        "labels (the *target*, e.g. real streets or night): it labels target images so that they can train a "
        "model. Not every label is right, so it also marks the ones to distrust.\n\n"
        f"- {labels}\n"
        f"- **Noise mask**: the pixels flagged as probably mislabelled (magenta), from {noise}; the *noise "
        "threshold* slider moves the cut-off without running the model again. A training run ignores these "
        "pixels.\n"
        "- **Confidence**: the top class probability per pixel, contrast-stretched to the range in this image "
        "(the scale under it gives the values).\n\n"
        "What to look at: pick an example below (it runs at once) or upload a street image, then compare the "
        "noise mask with the segmentation: flags should sit on object borders, small and rare classes and "
        "regions the model gets wrong. Images far smaller than the model's input "
        f"({' or '.join(f'{b.height} × {b.width}' for b in core.spec.buckets)} px) say little.")


def small_image_note(spec, height: int, width: int) -> str:
    """A warning for an image far below the model's input size, else ''."""
    b = spec.place(height, width).bucket
    if height * width >= SMALL_IMAGE_SHARE * b.height * b.width:
        return ""
    return (f"  \n⚠ This image is far smaller than the model's input ({b.height} × {b.width} px): it is "
            f"upscaled {min(b.height / height, b.width / width):.0f}×, so the result says little about it.")


def result_status(core, state: dict, noisy: np.ndarray, threshold: float) -> str:
    """The status line under a result: size, inference time, relabelled and noisy shares, confidence range."""
    pred = state["pred"]
    h, w = state["size"]
    changed = f"**{float(np.mean(pred.label != pred.raw_label)) * 100:.2f} %** of the pixels"
    if core.tta:
        labels = f"averaging relabelled {changed}"
    elif core.refines:
        labels = f"the PRN relabelled {changed}"
    else:
        labels = "labels are the teacher's (this model does not refine them)"
    source = ("1 − averaged confidence" if core.tta else "the PRN's noise head" if core.noise_from_prn
              else "1 − confidence" if core.has_prn else "1 − confidence (this model has no PRN)")
    lo, hi = render.confidence_range(pred.confidence)
    return (f"**{state['name']}** · {w} × {h} px · inference **{state['seconds'] * 1000:.1f} ms** "
            f"on {core.predictor.provider}  \n"
            f"{labels[0].upper() + labels[1:]} · **{100 * float(noisy.mean()):.2f} %** flagged "
            f"noisy at threshold {threshold:.2f} (default {core.noise_threshold:.2f}; "
            f"noise from {source}) · confidence {lo:.2f}–{hi:.2f}" + small_image_note(core.spec, h, w))


def batch_status(core, n_ok: int, n_failed: int, per_image_ms: float, n_run: int) -> str:
    """The batch tab's status line for one request."""
    if not n_ok and not n_failed:
        return "No images: add one or more files above."
    return (f"**{n_ok}** image(s) segmented, **{n_failed}** rejected · "
            f"{per_image_ms:.1f} ms per image ({n_run} image(s) in this model call) on "
            f"{core.predictor.provider} · noise threshold {core.noise_threshold:.2f}")
