import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from prnseg.errors import ConfigError  # noqa: E402
from prnseg.training import augment  # noqa: E402
from prnseg.training.ema import EMATeacher, ema_alpha  # noqa: E402


class DropPath(nn.Module):
    """Minimal stochastic depth, recognised by class name like timm's."""

    def forward(self, x):
        if not self.training:
            return x
        return x * (torch.rand(x.shape[0], 1, device=x.device) > 0.5).float() * 2


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.dp = DropPath()

    def forward(self, x):
        return self.dp(self.drop(self.bn(self.lin(x))))


def _set_params(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


# ----------------------------------------------------------------------------- EMA


def test_ema_ramp_values():
    assert ema_alpha(0, 0.999) == 0.0
    assert ema_alpha(1, 0.999) == pytest.approx(0.5)
    assert ema_alpha(10, 0.999) == pytest.approx(1 - 1 / 11)
    assert ema_alpha(100, 0.999) == pytest.approx(1 - 1 / 101)
    assert ema_alpha(999, 0.999) == pytest.approx(0.999)
    assert ema_alpha(50_000, 0.999) == pytest.approx(0.999)


def test_ema_step0_copies_then_averages_parameters():
    student = TinyNet()
    teacher = EMATeacher(student, alpha=0.999)
    assert all(not p.requires_grad for p in teacher.model.parameters())
    _set_params(student, 2.0)
    teacher.update(0)
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in teacher.model.parameters())
    _set_params(student, 4.0)
    assert teacher.update(1) == pytest.approx(0.5)
    assert all(torch.allclose(p, torch.full_like(p, 3.0)) for p in teacher.model.parameters())
    _set_params(student, 14.0)
    teacher.update(10)  # alpha 10/11: 3*10/11 + 14/11 = 4
    assert all(torch.allclose(p, torch.full_like(p, 4.0)) for p in teacher.model.parameters())


@pytest.mark.parametrize("mode", ["none", "copy", "ema"])
def test_ema_buffer_modes(mode):
    student = TinyNet()
    teacher = EMATeacher(student, buffers=mode)
    teacher.update(0)
    with torch.no_grad():
        student.bn.running_mean.fill_(4.0)
        student.bn.num_batches_tracked.fill_(7)
    teacher.update(1)  # alpha 0.5
    rm = teacher.model.bn.running_mean
    nbt = int(teacher.model.bn.num_batches_tracked)
    if mode == "none":
        assert torch.equal(rm, torch.zeros(4)) and nbt == 0
    elif mode == "copy":
        assert torch.equal(rm, torch.full((4,), 4.0)) and nbt == 7
    else:
        assert torch.allclose(rm, torch.full((4,), 2.0)) and nbt == 7


def test_bad_flags_raise():
    with pytest.raises(ConfigError):
        EMATeacher(TinyNet(), buffers="sometimes")
    with pytest.raises(ConfigError):
        EMATeacher(TinyNet(), bn_mode="eval", buffers="none")


@pytest.mark.parametrize("bn_mode,buffers", [("train", "none"), ("eval", "copy")])
def test_pseudo_label_mode_disables_dropout_keeps_bn_flag(bn_mode, buffers):
    teacher = EMATeacher(TinyNet(), bn_mode=bn_mode, buffers=buffers)
    x = torch.randn(8, 4)
    with teacher.pseudo_label_mode() as net:
        assert not torch.is_grad_enabled()
        assert not net.drop.training and not net.dp.training
        assert net.bn.training == (bn_mode == "train")
        out1, out2 = net(x), net(x)
    assert torch.equal(out1, out2)  # no dropout / drop-path randomness
    # flags restored afterwards
    assert teacher.model.drop.training and teacher.model.dp.training and teacher.model.bn.training
    assert torch.is_grad_enabled()


def test_bn_train_mode_uses_batch_statistics():
    teacher = EMATeacher(TinyNet(), bn_mode="train")
    x = torch.randn(16, 4) * 5 + 3
    with teacher.pseudo_label_mode() as net:
        h = net.bn(net.lin(x))
    assert torch.allclose(h.mean(0), torch.zeros(4), atol=1e-5)


def test_ddp_like_wrapper_is_unwrapped_and_state_roundtrip():
    student = TinyNet()
    wrapped = nn.DataParallel(student)
    teacher = EMATeacher(wrapped)
    assert set(teacher.model.state_dict()) == set(student.state_dict())
    _set_params(student, 1.5)
    teacher.update(0)
    state = teacher.state_dict()
    other = EMATeacher(TinyNet())
    other.load_state_dict(state)
    assert other.last_step == 0
    for a, b in zip(other.model.parameters(), teacher.model.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- ClassMix


def test_classmix_batch_scope_picks_half_of_batch_classes():
    labels = torch.tensor([[[0, 1], [2, 255]], [[3, 3], [4, 4]]]).long()  # 6 values in batch
    g = torch.Generator().manual_seed(0)
    masks = augment.get_class_masks(labels, scope="batch", generator=g)
    assert masks.dtype == torch.bool and masks.shape == labels.shape
    g = torch.Generator().manual_seed(0)
    batch_classes = torch.unique(labels)
    for i in range(2):
        chosen = batch_classes[torch.randperm(6, generator=g)[:3]]
        assert chosen.numel() == 3
        assert torch.equal(masks[i], torch.isin(labels[i], chosen))


def test_classmix_sample_scope_counts_and_membership():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (3, 16, 16), generator=g)
    labels[0, :4] = 255
    labels[2] = torch.where(labels[2] > 2, torch.tensor(255), labels[2])  # classes {0,1,2}
    for seed in range(5):
        masks = augment.get_class_masks(
            labels, scope="sample", generator=torch.Generator().manual_seed(seed)
        )
        for i in range(3):
            present = torch.unique(labels[i])
            present = present[present != 255]
            picked = torch.unique(labels[i][masks[i]])
            assert 255 not in picked.tolist()
            assert picked.numel() == math.ceil(present.numel() / 2)
            assert torch.equal(masks[i], torch.isin(labels[i], picked))


def test_mix_images_and_labels():
    mask = torch.tensor([[[True, False], [False, True]]])
    src = torch.ones(1, 3, 2, 2)
    tgt = torch.zeros(1, 3, 2, 2)
    out = augment.mix(mask, src, tgt)
    assert torch.equal(out[0, 1], mask[0].float())
    lbl = augment.mix(mask, torch.full((1, 2, 2), 7), torch.full((1, 2, 2), 3))
    assert lbl.tolist() == [[[7, 3], [3, 7]]]


# ----------------------------------------------------------------------------- jitter / blur


def _normalised(img01):
    m = torch.tensor(augment.IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(augment.IMAGENET_STD).view(1, 3, 1, 1)
    return (img01 * 255 - m) / s


def test_hsv_roundtrip():
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    x[0, :, 0, 0] = 0.5  # grey pixel
    assert torch.allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(x)), x, atol=1e-5)


def test_color_jitter_deterministic_and_identity_when_skipped():
    img = _normalised(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    a = augment.color_jitter(img, 0.2, 1.0, generator=torch.Generator().manual_seed(5))
    b = augment.color_jitter(img, 0.2, 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, img)
    assert augment.color_jitter(img, 0.2, 0.0, generator=torch.Generator()) is img
    # zero strength leaves the image unchanged up to the round trip
    same = augment.color_jitter(img, 0.0, 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(same, img, atol=1e-4)


def test_jitter_and_blur_apply_probabilities():
    img = torch.zeros(1, 3, 4, 4)
    g = torch.Generator().manual_seed(123)
    n = 2000
    jittered = sum(
        augment.color_jitter(img, 0.2, 0.8, generator=g) is not img for _ in range(n)
    )
    blurred = sum(augment.gaussian_blur(img, 0.5, generator=g) is not img for _ in range(n))
    assert abs(jittered / n - 0.8) < 0.04
    assert abs(blurred / n - 0.5) < 0.04


def test_blur_kernel_size_formula():
    assert augment.blur_kernel_size(512) == 51
    assert augment.blur_kernel_size(1024) == 103
    assert augment.blur_kernel_size(32) == 3
    assert all(augment.blur_kernel_size(n) % 2 == 1 for n in range(1, 600))


def test_gaussian_blur_preserves_constant_and_smooths():
    g = torch.Generator().manual_seed(0)
    const = torch.full((2, 3, 40, 30), 1.7)
    assert torch.allclose(augment.gaussian_blur(const, 1.0, generator=g), const, atol=1e-5)
    img = torch.zeros(1, 3, 40, 40)
    img[..., 20, 20] = 1.0
    a = augment.gaussian_blur(img, 1.0, generator=torch.Generator().manual_seed(9))
    b = augment.gaussian_blur(img, 1.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert a[0, 0, 20, 20] < 1.0 and a[0, 0, 20, 21] > 0.0
    assert a.sum().item() == pytest.approx(3.0, abs=1e-4)


def test_strong_transform_mixes_label_and_weight():
    g = torch.Generator().manual_seed(0)
    src_lbl = torch.randint(0, 4, (2, 12, 12), generator=g)
    tgt_lbl = torch.randint(10, 14, (2, 12, 12), generator=g)
    src_img = torch.randn(2, 3, 12, 12, generator=g)
    tgt_img = torch.randn(2, 3, 12, 12, generator=g)
    w = torch.full((2, 12, 12), 0.3)
    m = augment.get_class_masks(src_lbl, generator=torch.Generator().manual_seed(4))
    out = augment.strong_transform(
        src_img, tgt_img, src_lbl, tgt_lbl, w, generator=torch.Generator().manual_seed(4),
        jitter_apply_prob=0.0, blur_apply_prob=0.0,
    )
    assert m.any() and (~m).any()
    assert torch.equal(out.label, torch.where(m, src_lbl, tgt_lbl))
    assert torch.equal(out.weight, torch.where(m, torch.ones_like(w), w))
    assert torch.equal(out.image, torch.where(m[:, None], src_img, tgt_img))
    again = augment.strong_transform(
        src_img, tgt_img, src_lbl, tgt_lbl, w, generator=torch.Generator().manual_seed(4)
    )
    again2 = augment.strong_transform(
        src_img, tgt_img, src_lbl, tgt_lbl, w, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(again.image, again2.image) and torch.equal(again.label, again2.label)


def test_consistency_view_mirrors_and_changes_the_photometry():
    from prnseg.training.augment import IMAGENET_MEAN, IMAGENET_STD, consistency_view

    g = torch.Generator().manual_seed(0)
    raw = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 6) * 255, size=(16, 24), mode="bilinear",
                                          align_corners=False)
    img = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    view = consistency_view(img, 0.2, generator=g)
    assert view.shape == img.shape
    back = view.flip(-1)
    # mirrored: the view un-mirrored is much closer to the image than the view itself
    assert (back - img).abs().mean() < 0.5 * (view - img).abs().mean()
    assert not torch.allclose(back, img)                        # jitter and blur always applied
    again = consistency_view(img, 0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, view)                             # seeded: reproducible
