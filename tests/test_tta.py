"""Test-time augmentation (training/tta.py): mirrors and scales are undone before averaging."""

from __future__ import annotations

import pytest
import torch

from prnseg.training.tta import tta_probabilities


def _pixelwise(x: torch.Tensor) -> torch.Tensor:
    """A 1x1 'segmenter' at stride 4: class 0 where the red channel is high, class 1 elsewhere."""
    z = torch.stack([x[:, 0] * 4.0, -x[:, 0] * 4.0], 1)
    return torch.nn.functional.avg_pool2d(z, 4)


def test_the_mirrored_and_scaled_views_are_mapped_back_to_the_image():
    x = torch.zeros(2, 3, 72, 100)           # neither side a multiple of 32: each view is padded, then cropped
    x[0, 0, :, :37] = 1.0                    # left third red: a mirror not undone would put it on the right
    x[0, 0, :, 37:] = -1.0
    x[1, 0] = 1.0
    p = tta_probabilities(_pixelwise, x)
    assert p.shape == (2, 2, 72, 100)
    assert torch.allclose(p.sum(1), torch.ones(2, 72, 100), atol=1e-5)
    label = p.argmax(1)
    assert (label[0, :, :30] == 0).all() and (label[0, :, 45:] == 1).all() and (label[1] == 0).all()


def test_one_scale_is_the_mirror_average_and_more_scales_change_it():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    single = tta_probabilities(_pixelwise, x, scales=(1.0,))
    direct = torch.softmax(torch.nn.functional.interpolate(_pixelwise(x), size=(64, 96), mode="bilinear",
                                                           align_corners=False), 1)
    # a pixelwise model is mirror-equivariant up to the stride-4 pooling grid: close, not equal
    assert (single - direct).abs().mean() < 0.1
    assert not torch.allclose(tta_probabilities(_pixelwise, x), single)


# --- the runtime's NumPy version (serve/tta.py) -----------------------------------------------------------------

def test_numpy_resampling_is_pytorch_s_bilinear():
    import numpy as np

    from prnseg.serve.tta import resize_bilinear, view_matrix

    torch.manual_seed(0)
    z = torch.randn(2, 5, 8, 16)
    for hw in ((32, 64), (6, 11), (8, 16), (24, 40)):
        want = torch.nn.functional.interpolate(z, size=hw, mode="bilinear", align_corners=False).numpy()
        assert np.abs(resize_bilinear(z.numpy(), *hw) - want).max() < 1e-5
    # one composed matrix = upsample to the padded view, crop, unmirror, resize to the bucket
    f = torch.nn.functional
    seq = f.interpolate(z, size=(32, 64), mode="bilinear", align_corners=False)[..., :30, :50].flip(-1)
    seq = f.interpolate(seq, size=(40, 72), mode="bilinear", align_corners=False).numpy()
    my, mx = view_matrix(40, 30, 32, 8, False), view_matrix(72, 50, 64, 16, True)
    assert np.abs(np.matmul(np.matmul(my, z.numpy()), mx.T) - seq).max() < 1e-5


def test_the_runtime_s_augmentation_matches_training_s_on_the_exported_teacher(exported_model, prn_checkpoint,
                                                                              synth_root):
    """Labels logit-adjusted by the recorded class prior (the default) and plain (tau 0) both equal
    training's augmentation and adjustment on the same teacher."""
    import numpy as np

    from prnseg.image_io import list_images, read_image
    from prnseg.serve.predictor import Predictor
    from prnseg.training.checkpoint import load_checkpoint
    from prnseg.training.class_prior import adjust_probabilities
    from prnseg.training.loading import load_checkpoint_model

    images = [read_image(p) for p in list_images(synth_root / "cityscapes" / "leftImg8bit" / "val")[:2]]
    fused = Predictor(exported_model, backend="onnxruntime").predict(images)
    tta = Predictor(exported_model, backend="onnxruntime", tta=True)
    plain = Predictor(exported_model, backend="onnxruntime", tta=True, logit_adjustment=0)
    assert "test-time augmentation" in tta.provider and "logit-adjusted" in tta.provider
    assert tta.logit_adjustment == 0.25 and plain.logit_adjustment == 0
    assert tta.noise_threshold == 0.5 and Predictor(exported_model).noise_threshold == tta.spec.noise_threshold
    assert all(((a.noise_prob >= 0.5 * 255) == a.noise.astype(bool)).mean() > 0.999 for a in tta.predict(images))
    prior = torch.tensor(load_checkpoint(prn_checkpoint)["class_marginal"]["marginal"])
    assert np.allclose(tta.spec.raw["class_prior"], prior.numpy())
    teacher, _, _ = load_checkpoint_model(prn_checkpoint, "teacher")
    teacher.eval()
    spec = tta.spec
    changed = 0
    for img, f, a, b in zip(images, fused, tta.predict(images), plain.predict(images)):
        assert (a.raw_label == f.raw_label).mean() > 0.999      # the unaugmented pass is the fused graph's segmenter
        bucket, placement = spec.fit(img)
        x = (torch.from_numpy(bucket).float().permute(2, 0, 1)[None] - torch.tensor(spec.mean).view(1, 3, 1, 1)) \
            / torch.tensor(spec.std).view(1, 3, 1, 1)
        p = tta_probabilities(lambda t: teacher(t).logits, x)[0]
        want_plain = spec.unfit(p.argmax(0).numpy().astype(np.uint8), placement)
        adjusted = adjust_probabilities(p[None], prior, 0.25)[0].argmax(0)
        want = spec.unfit(adjusted.numpy().astype(np.uint8), placement)
        assert (b.label == want_plain).mean() > 0.99 and (a.label == want).mean() > 0.99
        changed += int((want != want_plain).sum())
        conf = spec.unfit(np.round(p.max(0).values.numpy() * 255).astype(np.uint8), placement)
        assert np.abs(b.confidence.astype(int) - conf).max() <= 2
        label_conf = spec.unfit(np.round(p.gather(0, adjusted[None])[0].numpy() * 255).astype(np.uint8), placement)
        assert np.abs(a.confidence.astype(int) - label_conf).max() <= 2   # the written label's averaged probability
        assert (a.noise_prob == b.noise_prob).all()               # the mask is the averaged top probability's
        assert ((a.noise_prob >= 128) == a.noise.astype(bool)).all()   # even odds, the --tta default threshold
    assert changed > 0     # the adjustment moved some labels, so the comparison above can tell the two apart


def test_logit_adjustment_is_refused_without_test_time_augmentation(exported_model):
    from prnseg.serve.predictor import BackendError, Predictor

    with pytest.raises(BackendError, match="tta=True"):
        Predictor(exported_model, backend="onnxruntime", logit_adjustment=0.25)
    with pytest.raises(BackendError, match=">= 0"):
        Predictor(exported_model, backend="onnxruntime", tta=True, logit_adjustment=-1)


def test_the_augmented_batch_is_kept_within_the_map_budget():
    from prnseg.serve.tta import MAP_BUDGET_BYTES, batch_limit

    assert batch_limit(19, 1024 * 2048) == 1 and batch_limit(19, 512 * 1024) == 6
    assert batch_limit(19, 128 * 256) * 4 * 19 * 128 * 256 <= MAP_BUDGET_BYTES
    assert batch_limit(1000, 4096 * 4096) == 1      # never zero
