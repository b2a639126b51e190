"""Losses of the UDA loop and the PRN, computed in float32 whatever the autocast dtype.

Reference quirks are flags with the reference as default: the segmentation CE is averaged over
all pixels (ignored ones stay in the denominator) and the pseudo-label weight is one scalar per
batch. Each function follows its inputs' device.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prnseg.labels import IGNORE_INDEX, NUM_CLASSES

CE_REDUCTION_MODES = ("all_pixels", "valid_pixels")
PSEUDO_WEIGHT_MODES = ("batch_ratio", "per_pixel")
# DAFormer's ImageNet feature distance is restricted to "thing" classes.
FD_THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _as_bhw(t: torch.Tensor) -> torch.Tensor:
    return t[:, 0] if t.dim() == 4 and t.shape[1] == 1 else t


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A float32 zero that is still connected to ``t``'s graph (so backward() and DDP's
    unused-parameter bookkeeping see the same graph whether or not the loss had any terms)."""
    return t.float().sum() * 0.0


def upsample_to(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of B x C x h x w maps to ``size``, in float32."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits


def seg_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction_mode: str = "all_pixels",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Pixel-weighted cross-entropy; logits are upsampled to the label size first.

    ``reduction_mode="all_pixels"`` (reference): sum of weighted per-pixel losses divided by the
    number of *all* pixels, so ignored pixels dilute the loss. ``"valid_pixels"``: divided by
    the number of non-ignored pixels (PyTorch's usual mean when ``weight`` is None). The two
    differ exactly by the valid-pixel ratio.
    """
    if reduction_mode not in CE_REDUCTION_MODES:
        raise ValueError(f"reduction_mode must be one of {CE_REDUCTION_MODES}, got {reduction_mode!r}")
    target = _as_bhw(target).long()
    with _no_autocast(logits.device):
        logits = upsample_to(logits, target.shape[-2:])
        ce = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
        if weight is not None:
            ce = ce * _as_bhw(weight).float()
        if reduction_mode == "all_pixels":
            return ce.mean()
        n_valid = (target != ignore_index).sum().clamp(min=1)
        return ce.sum() / n_valid


def pseudo_label_weight(
    probs_max: torch.Tensor, threshold: float = 0.968, mode: str = "batch_ratio"
) -> torch.Tensor:
    """Confidence weight of target pseudo-labels (B x H x W float32).

    ``"batch_ratio"`` (reference): one scalar, the share of the batch's pixels whose max
    probability is >= ``threshold``, broadcast to every pixel, so a confident batch counts more
    but no pixel is singled out. ``"per_pixel"``: each pixel's own indicator
    ``prob >= threshold`` (1 or 0), i.e. hard confidence filtering.
    """
    if mode not in PSEUDO_WEIGHT_MODES:
        raise ValueError(f"pseudo-weight mode must be one of {PSEUDO_WEIGHT_MODES}, got {mode!r}")
    confident = (probs_max.detach().float() >= threshold).float()
    if mode == "per_pixel":
        return confident
    return confident.mean().expand_as(confident).clone()


def crop_pseudo_margins(
    weight: torch.Tensor, top: int = 15, bottom: int = 120, left: int = 0, right: int = 0
) -> torch.Tensor:
    """Zero the weight in image margins (rows from the top/bottom, columns from left/right)
    where rectification artefacts and the ego-vehicle make pseudo-labels unreliable.
    Returns a new tensor (..., H, W)."""
    if min(top, bottom, left, right) < 0:
        raise ValueError("pseudo-label margins must be >= 0")
    out = weight.clone()
    if top:
        out[..., :top, :] = 0
    if bottom:
        out[..., -bottom:, :] = 0
    if left:
        out[..., :, :left] = 0
    if right:
        out[..., :, -right:] = 0
    return out


def balanced_pos_weight(noise_target: torch.Tensor, max_pos_weight: float = 100.0) -> torch.Tensor:
    """``n_neg / n_pos`` of a boolean target, clamped to [1/max, max]; 1 when either is absent.

    Scaling the positive terms by it gives errors and correct pixels the same total weight, so
    the noise head cannot win by predicting "clean" everywhere when errors are rare (or "noisy"
    when they dominate). The clamp keeps a batch with a handful of errors from exploding.
    """
    t = noise_target.bool()
    n_pos = t.sum().float()
    n_neg = t.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.ones((), device=t.device)
    return (n_neg / n_pos).clamp(1.0 / max_pos_weight, max_pos_weight)


def noise_bce_loss(
    noise_logit: torch.Tensor,
    noise_target: torch.Tensor,
    valid_mask: torch.Tensor,
    pos_weight: str | float = "balanced",
    max_pos_weight: float = 100.0,
) -> torch.Tensor:
    """Binary CE of the noise head against "pseudo-label is wrong", mean over valid pixels.

    ``pos_weight="balanced"``: :func:`balanced_pos_weight` computed on the batch's valid pixels.
    A float uses that fixed weight for the positive (noisy) terms.
    """
    logit = _as_bhw(noise_logit)
    target = _as_bhw(noise_target)
    valid = _as_bhw(valid_mask).bool()
    with _no_autocast(logit.device):
        x = logit.float()[valid]
        y = target[valid].float()
        if x.numel() == 0:
            return _zero_like_graph(logit)
        if pos_weight == "balanced":
            pw = balanced_pos_weight(y > 0.5, max_pos_weight)
        elif isinstance(pos_weight, (int, float)) and not isinstance(pos_weight, bool):
            pw = torch.tensor(float(pos_weight), device=x.device)
        else:
            raise ValueError(f"pos_weight must be 'balanced' or a number, got {pos_weight!r}")
        return F.binary_cross_entropy_with_logits(x, y, pos_weight=pw)


def _noise_logit_at(noise_logit: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A B x 1 x h x w (or B x h x w) noise logit upsampled to B x ``size``, as the labels it is scored on."""
    return upsample_to(noise_logit if noise_logit.dim() == 4 else noise_logit[:, None], size)[:, 0]


def prn_losses(
    refined_logits: torch.Tensor,
    noise_logit: torch.Tensor,
    perturbed_logits: torch.Tensor,
    gt: torch.Tensor,
    *,
    reduction_mode: str = "valid_pixels",
    pos_weight: str | float = "balanced",
    max_pos_weight: float = 100.0,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, torch.Tensor]:
    """PRN losses on a source batch: ``ref`` = CE(refined, gt), ``noise`` = BCE(noise logit,
    argmax(perturbed) != gt), both on pixels with gt != ignore.

    Both terms are computed at the label resolution: every map is upsampled bilinearly
    (align_corners=False), exactly as the segmentation loss and the deployed pseudo-labeler do
    before their argmax, so the noise target is the error the pseudo-label actually has at
    full resolution (boundaries included). ``pos_weight`` is :func:`noise_bce_loss`'s.
    ``reduction_mode`` defaults to ``valid_pixels``
    because the PRN has no reference behaviour to reproduce.
    """
    gt = _as_bhw(gt).long()
    size = gt.shape[-2:]
    ref = seg_ce_loss(refined_logits, gt, reduction_mode=reduction_mode, ignore_index=ignore_index)
    with _no_autocast(noise_logit.device):
        noise_up = _noise_logit_at(noise_logit, size)
        with torch.no_grad():
            wrong = upsample_to(perturbed_logits.detach(), size).argmax(dim=1) != gt
        valid = gt != ignore_index
        noise = noise_bce_loss(noise_up, wrong, valid, pos_weight, max_pos_weight)
    return {"ref": ref, "noise": noise}


def consistency_noise_loss(
    noise_logit: torch.Tensor,
    logits: torch.Tensor,
    view_logits: torch.Tensor,
    size: Sequence[int],
    *,
    pos_weight: str | float = "balanced",
    max_pos_weight: float = 100.0,
) -> torch.Tensor:
    """Noise BCE on unlabelled images: a pixel counts as noisy where the teacher's label on the
    image (``logits``) differs from its label on a second view (``view_logits``, already mapped
    back to the image's geometry), both compared at ``size`` after bilinear upsampling, as
    :func:`prn_losses` compares its labels."""
    with _no_autocast(noise_logit.device):
        with torch.no_grad():
            unstable = upsample_to(logits.detach(), size).argmax(1) != upsample_to(view_logits.detach(), size).argmax(1)
        return noise_bce_loss(_noise_logit_at(noise_logit, size), unstable, torch.ones_like(unstable),
                              pos_weight, max_pos_weight)


# ----------------------------------------------------------------------------- contrastive


class ProjectionHead(nn.Module):
    """1x1 conv - BN - ReLU - 1x1 conv, L2-normalised per pixel: the embedding space of the
    pixel contrastive loss, kept apart from the features the classifier uses."""

    def __init__(self, in_channels: int, proj_channels: int = 64, hidden_channels: int | None = None):
        super().__init__()
        hidden = hidden_channels or in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, proj_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x).float(), dim=1)


def downsample_labels_nearest(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B x H x W integer labels -> B x h x w by nearest neighbour (no label mixing)."""
    labels = _as_bhw(labels)
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def pixel_contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    *,
    temperature: float = 0.1,
    max_anchors_per_class: int = 256,
    max_samples: int = 4096,
    min_pixels_per_class: int = 2,
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Supervised pixel InfoNCE: for each sampled anchor pixel, pixels of the same class are
    positives and pixels of other classes negatives (SupCon form, averaged over positives).

    ``embeddings``: B x D x h x w (e.g. :class:`ProjectionHead` output; L2-normalised here in
    any case). ``labels``: B x H x W (source GT or PRN-refined target labels), downsampled to
    h x w by nearest neighbour; ``valid_mask`` (B x H x W, e.g. "not noisy") is downsampled the
    same way, and ignored or invalid pixels never take part. Class-balanced sampling: every
    class with at least ``min_pixels_per_class`` (>= 2, so an anchor has a positive) valid
    pixels gets ``min(max_anchors_per_class, max_samples // n_classes)`` anchors, or all its
    pixels if fewer; the sampled anchors are also the contrast set, and the loss is the mean
    over classes of the mean over that class's anchors, so big classes do not dominate.
    With fewer than two classes there are no negatives: returns a zero connected to the graph.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, d, h, w = embeddings.shape
    labels = _as_bhw(labels).long()
    if valid_mask is not None:
        labels = torch.where(_as_bhw(valid_mask).bool(), labels, torch.full_like(labels, ignore_index))
    labels = downsample_labels_nearest(labels, (h, w)).reshape(-1)
    with _no_autocast(embeddings.device):
        z = F.normalize(embeddings.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, d)
        classes, counts = torch.unique(labels[labels != ignore_index], return_counts=True)
        keep = counts >= max(2, min_pixels_per_class)
        classes = classes[keep]
        n_classes = int(classes.numel())
        if n_classes < 2:
            return _zero_like_graph(embeddings)
        per_class = max(2, min(max_anchors_per_class, max_samples // n_classes))
        gen_device = generator.device if generator is not None else torch.device("cpu")
        picked = []
        for c in classes.tolist():
            idx = torch.nonzero(labels == c, as_tuple=False)[:, 0]
            order = torch.randperm(idx.numel(), generator=generator, device=gen_device)
            picked.append(idx[order[:per_class].to(idx.device)])
        idx = torch.cat(picked)
        za, ya = z[idx], labels[idx]
        sim = za @ za.t() / temperature
        eye = torch.eye(len(idx), dtype=torch.bool, device=sim.device)
        log_denominator = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
        log_prob = sim - log_denominator
        positive = (ya[:, None] == ya[None, :]) & ~eye
        per_anchor = -(log_prob * positive).sum(dim=1) / positive.sum(dim=1)
        class_of_anchor = torch.searchsorted(classes, ya)
        class_sum = torch.zeros(n_classes, device=sim.device).index_add_(0, class_of_anchor, per_anchor)
        class_n = torch.bincount(class_of_anchor, minlength=n_classes).float()
        return (class_sum / class_n).mean()


# ----------------------------------------------------------------------------- feature distance


def downscale_label_ratio(
    gt: torch.Tensor,
    scale_factor: int,
    min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Label of each scale_factor x scale_factor cell: its majority class if that class covers
    at least ``min_ratio`` of the cell (ignore counted as a class), else ``ignore_index``.
    B x H x W -> B x H/s x W/s (DAFormer's ``downscale_label_ratio``)."""
    if scale_factor < 1:
        raise ValueError(f"scale_factor must be >= 1, got {scale_factor}")
    gt = _as_bhw(gt).long()
    substituted = torch.where(gt == ignore_index, torch.full_like(gt, num_classes), gt)
    if substituted.max() > num_classes or substituted.min() < 0:
        raise ValueError(f"labels must be in [0, {num_classes}) or {ignore_index}")
    one_hot = F.one_hot(substituted, num_classes + 1).permute(0, 3, 1, 2).float()
    ratio = F.avg_pool2d(one_hot, kernel_size=scale_factor)
    best_ratio, best = ratio.max(dim=1)
    best[best == num_classes] = ignore_index
    best[best_ratio < min_ratio] = ignore_index
    return best


def feature_distance_loss(
    student_feat: torch.Tensor,
    imnet_feat: torch.Tensor,
    gt: torch.Tensor,
    fd_classes: Sequence[int] | None = FD_THING_CLASSES,
    scale_min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """DAFormer's ImageNet feature distance (unweighted; the trainer applies lambda): mean L2
    distance between student and frozen ImageNet features (stage 4, 1/32) over the cells whose
    label (:func:`downscale_label_ratio`) is one of ``fd_classes``; all cells when None.
    With no such cell it returns a graph-connected zero (the reference would return NaN)."""
    with _no_autocast(student_feat.device):
        dist = torch.linalg.vector_norm(student_feat.float() - imnet_feat.detach().float(), dim=1)
        if fd_classes is None:
            return dist.mean()
        gt = _as_bhw(gt)
        scale = gt.shape[-1] // student_feat.shape[-1]
        cell_label = downscale_label_ratio(gt, scale, scale_min_ratio, num_classes, ignore_index)
        if cell_label.shape != dist.shape:
            raise ValueError(
                f"label cells {tuple(cell_label.shape)} do not match features {tuple(dist.shape)}"
            )
        wanted = torch.as_tensor(list(fd_classes), device=cell_label.device)
        mask = torch.isin(cell_label, wanted)
        if not bool(mask.any()):
            return _zero_like_graph(student_feat)
        return dist[mask].mean()
