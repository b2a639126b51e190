"""FFT low-frequency amplitude swap on logits (the method; README, "Training")."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prnseg.training.fft_perturb import (  # noqa: E402
    fft_perturb_logits, sample_eps, swapped_spectrum, window_half_size,
)


def _numpy_fda(src: np.ndarray, tgt: np.ndarray, eps: float) -> np.ndarray:
    """Independent reference: FDA_source_to_target_np's convention on one C x h x w array."""
    h, w = src.shape[-2:]
    b = int(np.floor(np.amin((h, w)) * eps))
    if b == 0:
        return src.copy()
    f_src = np.fft.fftshift(np.fft.fft2(src, axes=(-2, -1)), axes=(-2, -1))
    f_tgt = np.fft.fftshift(np.fft.fft2(tgt, axes=(-2, -1)), axes=(-2, -1))
    amp_src, pha_src = np.abs(f_src), np.angle(f_src)
    ch, cw = int(np.floor(h / 2.0)), int(np.floor(w / 2.0))
    amp_src[:, ch - b:ch + b + 1, cw - b:cw + b + 1] = np.abs(f_tgt)[:, ch - b:ch + b + 1, cw - b:cw + b + 1]
    f_new = np.fft.ifftshift(amp_src * np.exp(1j * pha_src), axes=(-2, -1))
    return np.real(np.fft.ifft2(f_new, axes=(-2, -1)))


def _shifted_fft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(z.double()), dim=(-2, -1))


def _pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(shape, generator=g) * 3
    tgt = torch.randn(shape, generator=g) * 3 + torch.linspace(-2, 2, shape[-1])
    return src, tgt


@pytest.mark.parametrize(
    "eps,h,w,expected",
    [(0.1, 64, 128, 6), (0.05, 32, 32, 1), (0.2, 10, 7, 1), (0.01, 1024, 512, 5), (0.0, 16, 16, 0),
     (0.02, 16, 16, 0), (0.5, 8, 8, 3), (0.5, 9, 12, 4)],
)
def test_window_half_size(eps, h, w, expected):
    assert window_half_size(eps, h, w) == expected


@pytest.mark.parametrize("eps", [-0.01, 0.51])
def test_window_half_size_rejects_out_of_range(eps):
    with pytest.raises(ValueError, match="eps must be in"):
        window_half_size(eps, 8, 8)


@pytest.mark.parametrize("h,w,eps", [(16, 24, 0.2), (15, 21, 0.2), (20, 20, 0.05)])
def test_window_has_2b_plus_1_squared_bins(h, w, eps):
    src, tgt = _pair((1, 2, h, w))
    out = fft_perturb_logits(src, tgt, eps)
    changed = (_shifted_fft(out).abs() - _shifted_fft(src).abs()).abs() > 1e-4
    b = window_half_size(eps, h, w)
    assert changed.sum(dim=(-2, -1)).tolist() == [[(2 * b + 1) ** 2] * 2]
    rows, cols = torch.nonzero(changed[0, 0], as_tuple=True)
    assert rows.min() == h // 2 - b and rows.max() == h // 2 + b
    assert cols.min() == w // 2 - b and cols.max() == w // 2 + b


def test_eps_zero_is_identity():
    src, tgt = _pair((2, 3, 16, 16))
    assert torch.equal(fft_perturb_logits(src, tgt, 0.0), src)
    assert torch.equal(fft_perturb_logits(src, tgt, 0.05), src)  # floor(0.05 * 16) = 0
    mixed = fft_perturb_logits(src, tgt, torch.tensor([0.0, 0.25]))
    assert torch.equal(mixed[0], src[0])
    assert not torch.allclose(mixed[1], src[1], atol=1e-3)


@pytest.mark.parametrize("h,w", [(16, 24), (15, 21)])
def test_amplitude_swapped_inside_window_and_phase_kept(h, w):
    src, tgt = _pair((2, 3, h, w), seed=1)
    eps = 0.2
    b = window_half_size(eps, h, w)

    # The centred window is symmetric about the zero frequency, so the swapped spectrum stays
    # Hermitian: its inverse FFT is real, and the FFT of the real output is that spectrum.
    spectrum = swapped_spectrum(src.double(), tgt.double(), eps)
    assert torch.fft.ifft2(spectrum).imag.abs().max() < 1e-10

    out = fft_perturb_logits(src.double(), tgt.double(), eps)
    f_out, f_src, f_tgt = _shifted_fft(out), _shifted_fft(src), _shifted_fft(tgt)
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[h // 2 - b:h // 2 + b + 1, w // 2 - b:w // 2 + b + 1] = True

    assert torch.allclose(f_out.abs()[..., inside], f_tgt.abs()[..., inside], atol=1e-9)
    assert torch.allclose(f_out.abs()[..., ~inside], f_src.abs()[..., ~inside], atol=1e-9)
    assert not torch.allclose(f_src.abs()[..., inside], f_tgt.abs()[..., inside], atol=1e-3)

    # Phase of the output equals the source phase wherever it is defined (non-negligible amplitudes).
    defined = (f_src.abs() > 1e-6) & (f_out.abs() > 1e-6)
    assert defined[..., inside].float().mean() > 0.9 and defined[..., ~inside].float().mean() > 0.9
    unit_out = f_out / f_out.abs().clamp_min(1e-300)
    unit_src = f_src / f_src.abs().clamp_min(1e-300)
    assert (unit_out - unit_src).abs()[defined].max() < 1e-8


@pytest.mark.parametrize("shape", [(2, 19, 32, 64), (1, 5, 15, 21), (3, 4, 24, 24)])
def test_matches_numpy_reference(shape):
    src, tgt = _pair(shape, seed=2)
    for eps in (0.05, 0.13, 0.2):
        got = fft_perturb_logits(src, tgt, eps)
        assert got.dtype == torch.float32
        for i in range(shape[0]):
            ref = _numpy_fda(src[i].double().numpy(), tgt[i].double().numpy(), eps)
            np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-5, rtol=0)


def test_per_sample_eps_matches_separate_calls():
    src, tgt = _pair((3, 4, 32, 40), seed=3)
    eps = torch.tensor([0.05, 0.1, 0.2])
    batched = fft_perturb_logits(src, tgt, eps)
    for i in range(3):
        single = fft_perturb_logits(src[i:i + 1], tgt[i:i + 1], float(eps[i]))
        assert torch.allclose(batched[i:i + 1], single, atol=1e-6)
    largest = fft_perturb_logits(src[:1], tgt[:1], 0.2)
    assert not torch.allclose(batched[:1], largest, atol=1e-3)  # each sample used its own eps
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        fft_perturb_logits(src, tgt, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="one shape"):
        fft_perturb_logits(src, tgt[:, :2], 0.1)


def test_runs_under_autocast_in_float32():
    src, tgt = _pair((2, 3, 16, 24), seed=4)
    src16, tgt16 = src.bfloat16(), tgt.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fft_perturb_logits(src16, tgt16, torch.tensor([0.1, 0.2]))
    assert out.dtype == torch.bfloat16 and out.shape == src.shape
    ref = fft_perturb_logits(src16.float(), tgt16.float(), torch.tensor([0.1, 0.2]))
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.01)


def test_sample_eps():
    g = torch.Generator().manual_seed(0)
    eps = sample_eps(1000, 0.05, 0.2, generator=g)
    assert eps.shape == (1000,) and eps.min() >= 0.05 and eps.max() <= 0.2
    assert eps.max() - eps.min() > 0.14 and math.isclose(float(eps.mean()), 0.125, abs_tol=0.01)
    again = sample_eps(1000, 0.05, 0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(eps, again)
    with pytest.raises(ValueError):
        sample_eps(4, 0.3, 0.2)
