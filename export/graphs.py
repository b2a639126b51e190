"""The torch modules that become the exported ONNX graphs.

``PseudoLabeler`` is both the graph traced into ``pseudolabeler.onnx`` and the PyTorch reference
the parity gate compares every artefact against: one definition of "what the model outputs", so
a difference found by the gate is an export difference, never a second implementation drifting.
Its PRN part is training's own :class:`~prnseg.training.prn_step.PRNStep`, traced as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prnseg.training.prn_step import PRNStep
from prnseg.training.pseudo_labels import written_labels

from . import NOISE_FROM

#: Output names of ``segmenter.onnx`` after ``logits`` (the PRN's inputs, one per encoder level).
FEATURE_NAMES = ("feat0", "feat1", "feat2", "feat3")
SEGMENTER_OUTPUTS = ("logits", *FEATURE_NAMES)
PRN_INPUTS = (*FEATURE_NAMES, "logits")
PRN_OUTPUTS = ("refined_logits", "noise_logit")
PSEUDOLABELER_OUTPUT_ORDER = ("label", "raw_label", "noise", "noise_prob", "confidence")


class SegmenterGraph(nn.Module):
    """Normalised float image N x 3 x H x W -> (logits at stride 4, the four encoder feature maps)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image: torch.Tensor):
        out = self.segmentor(image)
        return (out.logits, *out.features)


class PRNGraph(nn.Module):
    """(feat0..feat3, logits) -> (refined logits, noise logit), all at stride 4."""

    def __init__(self, prn: nn.Module):
        super().__init__()
        self.prn = prn

    def forward(self, feat0, feat1, feat2, feat3, logits):
        return self.prn([feat0, feat1, feat2, feat3], logits)


class UpsampleChannelsLast(torch.autograd.Function):
    """Bilinear upsampling (``align_corners=False``) of N x C x h x w to the H x W of ``like``
    (an N x H x W x 3 image), returned channels-last: N x H x W x C.

    Exported as a Transpose of the small stride-4 map, then a Resize over axes 1 and 2, so the
    per-pixel argmax and max-softmax that follow reduce over the innermost, contiguous axis.
    ONNX Runtime's CPU kernels run this tail about twice as fast as on NCHW's strided channel
    axis, and the full-resolution C-channel tensor is never transposed. In PyTorch it is the
    plain NCHW ``F.interpolate`` seen through a permuted view: the same values as before.
    TensorRT imports the Resize as a linear resize of the innermost three axes with scale 1 on C,
    which is exact on that axis.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        size = (like.shape[1], like.shape[2])
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)

    @staticmethod
    def symbolic(g, t, like):
        nhwc = g.op("Transpose", t, perm_i=[0, 2, 3, 1])
        sizes = g.op("Concat", g.op("Shape", nhwc, start_i=0, end_i=1), g.op("Shape", like, start_i=1, end_i=3),
                     g.op("Shape", nhwc, start_i=3, end_i=4), axis_i=0)
        # roi and scales omitted (empty input names), as the exporter writes its own Resize nodes
        empty = g.op("prim::Constant")
        empty.setType(torch._C.OptionalType.ofTensor())
        return g.op("Resize", nhwc, empty, empty, sizes, mode_s="linear",
                    coordinate_transformation_mode_s="half_pixel", cubic_coeff_a_f=-0.75, nearest_mode_s="floor")


def _to_uint8(p: torch.Tensor) -> torch.Tensor:
    """[0, 1] probability -> round(p * 255) as uint8."""
    return torch.round(p * 255.0).clamp(0, 255).to(torch.uint8)


class PseudoLabeler(nn.Module):
    """uint8 RGB N x H x W x 3 -> uint8 (label, raw_label, noise, noise_prob, confidence), N x H x W.

    Normalisation, segmenter, PRN, bilinear upsampling of the stride-4 maps to H x W, softmax,
    argmax and the noise threshold all live here, so full-resolution logits never leave the
    device. Without a PRN the label is the segmenter's own and the noise probability is
    ``1 - max softmax`` (the confidence-threshold detector self-training uses); ``threshold`` is
    then ``1 - pseudo_threshold``. With a PRN, the labels, confidence and noise mask are
    :meth:`PRNStep.infer`'s, the step the trainer writes its target pseudo-labels with:
    ``use_refined_labels=False`` keeps the segmenter's labels and uses the PRN for its noise mask
    only, and with refinement on the PRN's label replaces the segmenter's only where its top
    probability reaches ``refine_min_confidence``. ``noise_from="confidence"`` keeps those labels
    but makes the noise probability ``1 -`` their confidence even with a PRN: on the synthetic
    benchmark it ranks the labels' errors better than the PRN's noise head (README, Results).
    """

    def __init__(self, segmentor: nn.Module, prn: nn.Module | None, mean, std, noise_threshold: float,
                 use_refined_labels: bool = True, refine_min_confidence: float = 0.0, noise_from: str = "prn"):
        super().__init__()
        if noise_from not in NOISE_FROM:
            raise ValueError(f"noise_from {noise_from!r}: use one of {', '.join(NOISE_FROM)}")
        self.noise_from = noise_from
        self.step = PRNStep(use_refined_labels=bool(use_refined_labels),
                            refine_min_confidence=float(refine_min_confidence), noise_threshold=float(noise_threshold))
        self.segmentor = segmentor
        self.prn = prn
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def noise_threshold(self) -> float:
        return self.step.noise_threshold

    @property
    def noise_source(self) -> str:
        """What the noise output comes from, as model.json records it: ``prn`` or ``confidence``."""
        return "prn" if self.prn is not None and self.noise_from == "prn" else "confidence"

    @property
    def use_refined_labels(self) -> bool:
        return self.step.use_refined_labels

    @property
    def refine_min_confidence(self) -> float:
        return self.step.refine_min_confidence

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x 3 -> float N x 3 x H x W, ``(x - mean) / std``."""
        x = image.to(torch.float32).permute(0, 3, 1, 2)  # cast first: TensorRT takes uint8 only into a Cast
        return (x - self.mean) * self.inv_std

    def forward(self, image: torch.Tensor):
        size = (image.shape[1], image.shape[2])
        out = self.segmentor(self.normalise(image))
        if self.prn is not None:
            # class scores channels-last (innermost); the 1-channel noise logit stays NCHW
            w = self.step.infer(
                self.prn, out.features, out.logits, resize=lambda t: UpsampleChannelsLast.apply(t, image),
                resize_noise=lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0], dim=-1)
            label, raw_label, noise, noise_prob, confidence = w.label, w.raw_label, w.noise, w.noise_prob, w.confidence
            if self.noise_from == "confidence":
                noise_prob = 1.0 - confidence
                noise = noise_prob >= self.noise_threshold
        else:
            raw_logits = UpsampleChannelsLast.apply(out.logits, image)
            label, confidence, _ = written_labels(raw_logits, None, 0.0, dim=-1)
            raw_label = raw_logits.argmax(-1)
            noise_prob = 1.0 - confidence
            noise = noise_prob >= self.noise_threshold
        return (label.to(torch.uint8), raw_label.to(torch.uint8), noise.to(torch.uint8), _to_uint8(noise_prob),
                _to_uint8(confidence))
