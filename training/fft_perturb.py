"""FFT low-frequency amplitude swap on logits: the PRN's training signal without target labels.

The teacher's source logits keep their phase (object layout) and take the target logits'
low-frequency amplitude (global, target-like confidence patterns), which gives source
predictions that are wrong the way target predictions are wrong, while the source labels stay
valid supervision. This is FDA's amplitude swap (numpy convention: fftshift, a centred window
of (2b+1) x (2b+1) bins, b = floor(eps * min(h, w))) applied per class channel.

Window choice: the centred (2b+1)-window is symmetric around the zero frequency, so the swapped
spectrum stays Hermitian and the inverse FFT is real up to rounding; taking the real part then
loses nothing. b = 0 would still swap the DC term under that convention; here b = 0 swaps
nothing, so eps = 0 is the identity.
"""

from __future__ import annotations

import math

import torch

EPS_MAX = 0.5


def window_half_size(eps: float, h: int, w: int) -> int:
    """b = floor(eps * min(h, w)), capped at (min(h, w) - 1) // 2 so the window fits the spectrum."""
    if not 0.0 <= eps <= EPS_MAX:
        raise ValueError(f"eps must be in [0, {EPS_MAX}], got {eps}")
    return min(math.floor(eps * min(h, w)), (min(h, w) - 1) // 2)


def sample_eps(batch: int, low: float = 0.05, high: float = 0.2, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """One eps ~ U(low, high) per sample (float64, so floor(eps * size) matches Python floats)."""
    if not 0.0 <= low <= high <= EPS_MAX:
        raise ValueError(f"need 0 <= low <= high <= {EPS_MAX}, got low={low}, high={high}")
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def _half_sizes(eps: float | torch.Tensor, batch: int, h: int, w: int) -> list[int]:
    if isinstance(eps, torch.Tensor):
        values = eps.detach().to("cpu", torch.float64).reshape(-1).tolist()
        if len(values) == 1:
            values = values * batch
        if len(values) != batch:
            raise ValueError(f"eps has {len(values)} values for a batch of {batch}")
    else:
        values = [float(eps)] * batch
    return [window_half_size(e, h, w) for e in values]


def _window_mask(half_sizes: list[int], h: int, w: int, device: torch.device) -> torch.Tensor:
    """B x 1 x h x w bool mask of the centred (2b+1)^2 window in fftshift-ed coordinates."""
    b = torch.tensor(half_sizes, device=device).view(-1, 1, 1, 1)
    rows = (torch.arange(h, device=device) - h // 2).abs().view(1, 1, h, 1)
    cols = (torch.arange(w, device=device) - w // 2).abs().view(1, 1, 1, w)
    return (rows <= b) & (cols <= b) & (b > 0)


def _check(z_src: torch.Tensor, z_tgt: torch.Tensor) -> None:
    if z_src.dim() != 4 or z_src.shape != z_tgt.shape:
        raise ValueError(
            f"need two B x C x h x w tensors of one shape, got {tuple(z_src.shape)} and {tuple(z_tgt.shape)}"
        )


def _swap(z_src: torch.Tensor, z_tgt: torch.Tensor, half_sizes: list[int]) -> torch.Tensor:
    h, w = z_src.shape[-2:]
    dtype = torch.float64 if z_src.dtype == torch.float64 else torch.float32
    dims = (-2, -1)
    with torch.autocast(device_type=z_src.device.type, enabled=False):
        f_src = torch.fft.fftshift(torch.fft.fft2(z_src.to(dtype), dim=dims), dim=dims)
        f_tgt = torch.fft.fftshift(torch.fft.fft2(z_tgt.to(dtype), dim=dims), dim=dims)
        mask = _window_mask(half_sizes, h, w, z_src.device)
        amplitude = torch.where(mask, f_tgt.abs(), f_src.abs())
        return torch.fft.ifftshift(torch.polar(amplitude, f_src.angle()), dim=dims)


def swapped_spectrum(z_src: torch.Tensor, z_tgt: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """The perturbed (un-shifted) complex spectrum whose inverse FFT is the perturbed logits.

    Computed in float32 (float64 inputs stay float64) with autocast off: cuFFT in half precision
    only takes power-of-two sizes and loses the small amplitudes.
    """
    _check(z_src, z_tgt)
    b, _, h, w = z_src.shape
    return _swap(z_src, z_tgt, _half_sizes(eps, b, h, w))


def fft_perturb_logits(z_src: torch.Tensor, z_tgt: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Source logits with their low-frequency amplitude replaced by the target's, per channel.

    ``z_src``, ``z_tgt``: B x C x h x w; ``eps``: a float or one value per sample (B-tensor),
    each in [0, 0.5]. Returns a tensor of ``z_src``'s shape and dtype. Samples whose window is
    empty (b = 0, e.g. eps = 0) come back bit-exact instead of through an FFT round trip.
    """
    _check(z_src, z_tgt)
    b, _, h, w = z_src.shape
    half_sizes = _half_sizes(eps, b, h, w)
    if not any(half_sizes):
        return z_src.clone()
    with torch.autocast(device_type=z_src.device.type, enabled=False):
        out = torch.fft.ifft2(_swap(z_src, z_tgt, half_sizes), dim=(-2, -1)).real.to(z_src.dtype)
    if all(half_sizes):
        return out
    swapped = torch.tensor([k > 0 for k in half_sizes], device=z_src.device).view(-1, 1, 1, 1)
    return torch.where(swapped, out, z_src)
