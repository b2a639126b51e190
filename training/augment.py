"""DACS strong augmentation in plain torch: ClassMix, colour jitter, Gaussian blur.

Images are B x 3 x H x W, normalised with the ImageNet mean/std in 0..255 units; labels are
B x H x W int64; pixel weights B x H x W float. Every random draw comes from an explicit
``torch.Generator`` (CPU or on the images' device), so a seeded generator reproduces a batch
exactly. Order and probabilities follow DAFormer's ``strong_transform``: mix -> jitter -> blur;
the jitter and the blur are each switched on by one draw per call (shared by the batch), while
their magnitudes (jitter factors, blur sigma) are drawn per sample, as the reference's
per-sample calls do.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from prnseg.labels import IGNORE_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
CLASSMIX_SCOPES = ("batch", "sample")
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)


def _randperm(n: int, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=gen_device)


def _as_bhw(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() == 4 and labels.shape[1] == 1:
        return labels[:, 0]
    if labels.dim() != 3:
        raise ValueError(f"expected labels of shape B x H x W, got {tuple(labels.shape)}")
    return labels


# ----------------------------------------------------------------------------- ClassMix


def get_class_masks(
    labels: torch.Tensor,
    scope: str = "batch",
    generator: torch.Generator | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """ClassMix masks: for each sample, ceil(n/2) of n candidate classes, drawn at random; the
    mask is True where that sample's (source) label is one of them. Returns B x H x W bool.

    ``scope="batch"`` (reference): the candidates are ``torch.unique`` of the whole batch,
    ignore label included, so a sample may draw classes it does not contain (its mask then
    pastes fewer pixels) and may paste its ignored pixels. ``scope="sample"``: candidates are
    the sample's own classes without the ignore label.
    """
    if scope not in CLASSMIX_SCOPES:
        raise ValueError(f"ClassMix scope must be one of {CLASSMIX_SCOPES}, got {scope!r}")
    labels = _as_bhw(labels)
    batch_classes = torch.unique(labels) if scope == "batch" else None
    masks = []
    for label in labels:
        if scope == "batch":
            classes = batch_classes
        else:
            classes = torch.unique(label)
            classes = classes[classes != ignore_index]
        n = int(classes.numel())
        chosen = classes[_randperm(n, generator)[: (n + 1) // 2].to(classes.device)]
        masks.append(torch.isin(label, chosen))
    return torch.stack(masks)


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paste ``source`` onto ``target`` where ``mask`` (B x H x W) is True; works for images
    (B x C x H x W), labels and weights (B x H x W)."""
    if source.shape != target.shape:
        raise ValueError(f"mix: source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    mask = mask.bool()
    if source.dim() == 4:
        mask = mask[:, None]
    return torch.where(mask, source, target)


# ----------------------------------------------------------------------------- colour jitter


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(dim=-3)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (..., 3, H, W) -> HSV with hue in [0, 1)."""
    r, g, b = img.unbind(dim=-3)
    maxc = img.amax(dim=-3)
    minc = img.amin(dim=-3)
    chroma = maxc - minc
    gray = chroma == 0
    sat = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe_chroma = torch.where(gray, torch.ones_like(chroma), chroma)
    rc = (maxc - r) / safe_chroma
    gc = (maxc - g) / safe_chroma
    bc = (maxc - b) / safe_chroma
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    hue = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    hue = torch.where(gray, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack((hue, sat, maxc), dim=-3)


def hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """HSV (hue in [0, 1)) -> RGB in [0, 1]; inverse of :func:`rgb_to_hsv`."""
    h, s, v = img.unbind(dim=-3)
    h6 = torch.remainder(h, 1.0) * 6.0
    sector = torch.floor(h6)
    frac = h6 - sector
    sector = sector.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * frac)
    t = v * (1.0 - s * (1.0 - frac))
    # Per sector (0..5) the (r, g, b) triple is a fixed choice among v, t, p, q.
    choices = torch.stack((v, q, p, t), dim=-3)  # index 0=v, 1=q, 2=p, 3=t
    table = torch.tensor(
        [[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=img.device
    )
    idx = table[sector].movedim(-1, -3)  # (..., 3, H, W)
    return torch.gather(choices, -3, idx)


def _adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor).clamp(0.0, 1.0)


def _adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    mean = _grayscale(img).mean(dim=(-3, -2, -1), keepdim=True)
    return (img * factor + mean * (1.0 - factor)).clamp(0.0, 1.0)


def _adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor + _grayscale(img) * (1.0 - factor)).clamp(0.0, 1.0)


def _adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    hsv = rgb_to_hsv(img)
    hue = torch.remainder(hsv[..., 0, :, :] + shift, 1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[..., 1, :, :], hsv[..., 2, :, :]), dim=-3))


def _norm_tensors(img: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.as_tensor(mean, dtype=torch.float32, device=img.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=img.device).view(1, -1, 1, 1)
    return m, s


def color_jitter(
    img: torch.Tensor,
    strength: float = 0.2,
    apply_prob: float = 0.8,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue on the denormalised [0, 1] image.

    One draw decides for the whole batch whether to jitter (probability ``apply_prob``; the
    reference's ``color_jitter_probability=0.2`` means "skip if U <= 0.2", i.e. 0.8 here). Then
    each sample gets its own factors and its own random order of the four operations:
    brightness/contrast/saturation factors ~ U(max(0, 1-s), 1+s), hue shift ~ U(-s, s) turns.
    The operations follow torchvision/PIL semantics (multiplicative brightness, blend with the
    grey mean for contrast, with the grey image for saturation, HSV hue rotation), which is
    what current kornia's ``ColorJitter`` implements; the reference's kornia 0.5 used an
    additive brightness shift instead.
    """
    if not 0.0 <= strength <= 0.5:
        raise ValueError(f"colour jitter strength must be in [0, 0.5], got {strength}")
    if _rand((), generator, torch.device("cpu")).item() >= apply_prob:
        return img
    b = img.shape[0]
    low = max(0.0, 1.0 - strength)
    factors = _rand((b, 4), generator, torch.device("cpu"))
    orders = [_randperm(4, generator).tolist() for _ in range(b)]
    m, s = _norm_tensors(img, mean, std)
    x = (img.float() * s + m) / 255.0
    out = []
    for i in range(b):
        xi = x[i]
        scale = factors[i, :3] * (1.0 + strength - low) + low
        hue_shift = float(factors[i, 3] * 2.0 * strength - strength)
        for op in orders[i]:
            if op == 0:
                xi = _adjust_brightness(xi, float(scale[0]))
            elif op == 1:
                xi = _adjust_contrast(xi, float(scale[1]))
            elif op == 2:
                xi = _adjust_saturation(xi, float(scale[2]))
            else:
                xi = _adjust_hue(xi, hue_shift)
        out.append(xi)
    x = torch.stack(out)
    return ((x * 255.0 - m) / s).to(img.dtype)


# ----------------------------------------------------------------------------- Gaussian blur


def blur_kernel_size(length: int) -> int:
    """Reference kernel size for an image side: ``floor(ceil(0.1 L) - 0.5 + ceil(0.1 L) % 2)``,
    the odd number at or just below 10 % of the side (51 for 512)."""
    c = math.ceil(0.1 * length)
    return int(math.floor(c - 0.5 + c % 2))


def gaussian_kernel1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussians, one row per sigma: (N,) sigmas -> N x size."""
    x = torch.arange(size, dtype=torch.float32, device=sigma.device) - (size - 1) / 2.0
    k = torch.exp(-(x[None, :] ** 2) / (2.0 * sigma[:, None].float() ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(
    img: torch.Tensor,
    apply_prob: float = 0.5,
    sigma_range: tuple[float, float] = (0.15, 1.15),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian blur with the reference's kernel size (:func:`blur_kernel_size` per axis) and
    reflect padding (kornia's default border). One draw decides for the batch whether to blur;
    sigma ~ U(sigma_range) per sample. Blurring the normalised image equals blurring the raw one
    (the kernel sums to 1 and normalisation is affine)."""
    if _rand((), generator, torch.device("cpu")).item() >= apply_prob:
        return img
    b, c, h, w = img.shape
    lo, hi = sigma_range
    sigma = _rand((b,), generator, img.device) * (hi - lo) + lo
    ky, kx = blur_kernel_size(h), blur_kernel_size(w)
    wy = gaussian_kernel1d(ky, sigma).repeat_interleave(c, dim=0).view(b * c, 1, ky, 1)
    wx = gaussian_kernel1d(kx, sigma).repeat_interleave(c, dim=0).view(b * c, 1, 1, kx)
    x = img.float().reshape(1, b * c, h, w)
    x = F.pad(x, (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    x = F.conv2d(x, wy, groups=b * c)
    x = F.conv2d(x, wx, groups=b * c)
    return x.view(b, c, h, w).to(img.dtype)


# ----------------------------------------------------------------------------- strong transform


class MixedBatch(NamedTuple):
    image: torch.Tensor  # B x 3 x H x W, normalised
    label: torch.Tensor  # B x H x W int64
    weight: torch.Tensor  # B x H x W float


def strong_transform(
    source_img: torch.Tensor,
    target_img: torch.Tensor,
    source_label: torch.Tensor,
    target_label: torch.Tensor,
    target_weight: torch.Tensor,
    *,
    mix_mask: torch.Tensor | None = None,
    source_weight: torch.Tensor | None = None,
    classmix_scope: str = "batch",
    jitter_strength: float = 0.2,
    jitter_apply_prob: float = 0.8,
    blur_apply_prob: float = 0.5,
    blur_sigma_range: tuple[float, float] = (0.15, 1.15),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> MixedBatch:
    """DACS mixing: paste ClassMix source classes onto the target image, label and weight,
    then jitter and blur the mixed image (labels and weights are not photometrically changed).

    ``mix_mask`` defaults to :func:`get_class_masks` of ``source_label`` with
    ``classmix_scope``. ``source_weight`` defaults to 1 (source labels are ground truth), so
    the mixed weight is 1 on pasted pixels and the target weight elsewhere, as in the
    reference. ``blur_apply_prob=0`` disables the blur.
    """
    source_label = _as_bhw(source_label)
    target_label = _as_bhw(target_label)
    if mix_mask is None:
        mix_mask = get_class_masks(source_label, scope=classmix_scope, generator=generator)
    mix_mask = mix_mask.bool()
    if source_weight is None:
        source_weight = torch.ones_like(target_weight)
    image = mix(mix_mask, source_img, target_img)
    label = mix(mix_mask, source_label, target_label)
    weight = mix(mix_mask, source_weight.to(target_weight.dtype), target_weight)
    image = color_jitter(
        image, jitter_strength, jitter_apply_prob, mean=mean, std=std, generator=generator
    )
    image = gaussian_blur(image, blur_apply_prob, blur_sigma_range, generator=generator)
    return MixedBatch(image, label, weight)


def consistency_view(img: torch.Tensor, jitter_strength: float = 0.2,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The second view for label consistency: mirrored, colour-jittered and blurred, all applied.

    A pseudo-label that changes between an image and this view is unreliable; the caller mirrors
    the view's prediction back (``.flip(-1)``) before comparing. Mirroring changes no class, and
    jitter and blur are the photometric changes the student is already trained to ignore.
    """
    view = color_jitter(img.flip(-1), strength=jitter_strength, apply_prob=1.0, generator=generator)
    return gaussian_blur(view, apply_prob=1.0, generator=generator)
