import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from prnseg.training import losses as L  # noqa: E402


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ce_modes_differ_by_valid_ratio_and_upsample():
    g = _gen()
    logits = torch.randn(2, 5, 4, 4, generator=g)
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[0, :3] = 255
    weight = torch.rand(2, 8, 8, generator=g)
    all_px = L.seg_ce_loss(logits, target, weight, "all_pixels")
    valid_px = L.seg_ce_loss(logits, target, weight, "valid_pixels")
    ratio = (target != 255).float().mean()
    assert all_px.item() == pytest.approx((valid_px * ratio).item(), rel=1e-6)
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    ref = (F.cross_entropy(up, target, reduction="none", ignore_index=255) * weight).mean()
    assert all_px.item() == pytest.approx(ref.item(), rel=1e-6)
    # without weights, valid_pixels is PyTorch's usual mean
    plain = F.cross_entropy(up, target, ignore_index=255)
    assert L.seg_ce_loss(logits, target, reduction_mode="valid_pixels").item() == pytest.approx(
        plain.item(), rel=1e-6
    )


def test_pseudo_weight_modes():
    probs = torch.tensor([[[0.99, 0.5], [0.968, 0.1]], [[0.97, 0.97], [0.2, 0.3]]])
    w = L.pseudo_label_weight(probs, 0.968, "batch_ratio")
    assert w.shape == probs.shape
    assert torch.allclose(w, torch.full_like(w, 4 / 8))
    pp = L.pseudo_label_weight(probs, 0.968, "per_pixel")
    assert pp.tolist() == [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]


def test_crop_margins():
    w = torch.ones(2, 20, 10)
    out = L.crop_pseudo_margins(w, top=3, bottom=5, left=1, right=2)
    assert torch.equal(w, torch.ones(2, 20, 10))  # input untouched
    assert out[:, :3].sum() == 0 and out[:, -5:].sum() == 0
    assert out[:, :, :1].sum() == 0 and out[:, :, -2:].sum() == 0
    assert out[:, 3:15, 1:8].eq(1).all()
    assert out.sum() == 2 * 12 * 7
    assert torch.equal(L.crop_pseudo_margins(w, 0, 0), w)


def test_noise_bce_balanced_hand_case():
    logit = torch.tensor([[[0.0, 1.0], [-1.0, 2.0], [3.0, 0.5]]])  # 1 x 3 x 2
    target = torch.tensor([[[1, 0], [0, 0], [1, 1]]]).bool()
    valid = torch.tensor([[[True, True], [True, True], [True, False]]])
    # valid: positives logits {0, 3}, negatives {1, -1, 2}: pos_weight = 3/2
    def sp(x):  # softplus
        return math.log1p(math.exp(x))
    expected = (1.5 * (sp(-0.0) + sp(-3.0)) + sp(1.0) + sp(-1.0) + sp(2.0)) / 5
    got = L.noise_bce_loss(logit, target, valid, "balanced")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    fixed = L.noise_bce_loss(logit[:, None], target, valid, pos_weight=1.0)
    assert fixed.item() == pytest.approx((sp(0.0) + sp(-3.0) + sp(1.0) + sp(-1.0) + sp(2.0)) / 5, rel=1e-6)
    assert L.balanced_pos_weight(torch.tensor([True] + [False] * 999), 100.0).item() == 100.0


def test_prn_losses_noise_target_is_perturbed_error():
    g = _gen(1)
    gt = torch.randint(0, 3, (1, 8, 8), generator=g)
    gt[0, 0] = 255
    perturbed = F.one_hot(gt.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 10
    perturbed[0, :, 4:] = torch.tensor([10.0, 0, 0]).view(3, 1, 1)  # predicts class 0 in the lower half
    wrong = (gt != 0) & (gt != 255)
    wrong[0, :4] = False
    refined = torch.randn(1, 3, 8, 8, generator=g, requires_grad=True)
    # a noise logit that is exactly the target (+-8) must give a near-zero loss
    noise_logit = (wrong.float() * 16 - 8)[:, None].requires_grad_()
    out = L.prn_losses(refined, noise_logit, perturbed, gt)
    assert set(out) == {"ref", "noise"}
    assert out["noise"].item() < 1e-2
    flipped = L.prn_losses(refined, -noise_logit, perturbed, gt)
    assert flipped["noise"].item() > 5
    assert out["ref"].item() == pytest.approx(
        F.cross_entropy(refined, gt, ignore_index=255).item(), rel=1e-6
    )
    (out["ref"] + out["noise"]).backward()
    assert refined.grad is not None and noise_logit.grad is not None


def _clustered(labels, dim=8, noise=0.05, seed=0):
    g = _gen(seed)
    centers = F.normalize(torch.randn(10, dim, generator=g), dim=1)
    emb = centers[labels.clamp(max=9)].permute(0, 3, 1, 2)
    return emb + noise * torch.randn(emb.shape, generator=g)


def test_contrastive_lower_for_clustered_features():
    g = _gen(2)
    labels = torch.randint(0, 4, (2, 16, 16), generator=g)
    labels_full = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 32 x 32 label map
    clustered = _clustered(labels)
    random = torch.randn(2, 8, 16, 16, generator=g)
    lc = L.pixel_contrastive_loss(clustered, labels_full, generator=_gen(0))
    lr = L.pixel_contrastive_loss(random, labels_full, generator=_gen(0))
    assert lc.item() < 0.5 * lr.item()
    # deterministic with a seeded generator
    assert L.pixel_contrastive_loss(random, labels_full, generator=_gen(0)).item() == lr.item()


def test_contrastive_excludes_invalid_pixels():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 1
    emb = _clustered(labels, noise=0.0)
    # corrupt the class-1 embeddings on the rows marked invalid; masking them keeps the loss low
    emb[0, :, :2, 4:] = _clustered(torch.zeros(1, 2, 4, dtype=torch.long), noise=0.0)[0]
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[0, :2] = False
    masked = L.pixel_contrastive_loss(emb, labels, valid, generator=_gen(0))
    unmasked = L.pixel_contrastive_loss(emb, labels, generator=_gen(0))
    assert masked.item() < unmasked.item()


def test_contrastive_single_class_is_zero_with_grad():
    emb = torch.randn(1, 4, 6, 6, requires_grad=True)
    labels = torch.full((1, 6, 6), 3)
    labels[0, 0] = 255
    loss = L.pixel_contrastive_loss(emb, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert emb.grad is not None and torch.equal(emb.grad, torch.zeros_like(emb))


def test_projection_head_is_unit_norm():
    head = L.ProjectionHead(6, 5)
    out = head(torch.randn(2, 6, 3, 3))
    assert out.shape == (2, 5, 3, 3)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_downscale_label_ratio_and_feature_distance():
    gt = torch.full((1, 4, 4), 13)
    gt[0, :2, :2] = 0  # top-left cell: road (not a thing class)
    gt[0, 2:, :2] = torch.tensor([[13, 13], [13, 2]])  # 75 % car -> car
    gt[0, :2, 2:] = torch.tensor([[13, 2], [2, 255]])  # no majority >= 0.75 -> ignore
    cells = L.downscale_label_ratio(gt, 2, 0.75)
    assert cells.tolist() == [[[0, 255], [13, 13]]]
    s = torch.zeros(1, 3, 2, 2, requires_grad=True)
    t = torch.zeros(1, 3, 2, 2)
    t[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fd = L.feature_distance_loss(s, t, gt, fd_classes=L.FD_THING_CLASSES)
    assert fd.item() == pytest.approx((3.0 + 4.0) / 2)
    assert L.feature_distance_loss(s, t, gt, fd_classes=None).item() == pytest.approx(2.5)
    none = L.feature_distance_loss(s, t, torch.zeros(1, 4, 4, dtype=torch.long))
    assert none.item() == 0.0 and none.requires_grad


def test_losses_are_float32_under_bf16_autocast():
    g = _gen(4)
    logits = torch.randn(2, 4, 4, 4, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    emb = torch.randn(2, 6, 4, 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce = L.seg_ce_loss(logits.bfloat16(), target)
        out = L.prn_losses(logits.bfloat16(), logits[:, :1].bfloat16(), logits, target)
        con = L.pixel_contrastive_loss(emb.bfloat16(), target, generator=_gen(0))
    assert ce.dtype == out["ref"].dtype == out["noise"].dtype == con.dtype == torch.float32
    assert ce.item() == pytest.approx(L.seg_ce_loss(logits.bfloat16().float(), target).item(), rel=1e-5)


def test_consistency_noise_loss_targets_pixels_whose_label_changes():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 5.0                       # class 0 everywhere
    view = logits.clone()
    view[0, :, 0, 0] = torch.tensor([0.0, 5.0, 0.0])   # the view disagrees at one pixel
    noise = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = L.consistency_noise_loss(noise, logits, view, (2, 2), pos_weight=1.0)
    loss.backward()
    assert noise.grad[0, 0, 0, 0] < 0 and (noise.grad[0, 0].flatten()[1:] > 0).all()
    expected = F.binary_cross_entropy_with_logits(torch.zeros(4), torch.tensor([1.0, 0, 0, 0]))
    assert torch.isclose(loss, expected)
    same = L.consistency_noise_loss(torch.zeros(1, 1, 2, 2), logits, logits, (2, 2), pos_weight=1.0)
    assert torch.isclose(same, F.binary_cross_entropy_with_logits(torch.zeros(4), torch.zeros(4)))
