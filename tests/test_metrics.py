import json
import math

import numpy as np
import pytest

from prnseg.labels import CITYSCAPES_CLASSES, SYNTHIA_16_CLASSES, trainid_to_labelid
from prnseg.metrics import BinaryDetectionStats, ConfusionMatrix, auroc_exact, auroc_from_histograms
from prnseg.training.metrics import PseudoLabelQuality


def _random_pair(rng, shape=(24, 32), n_absent=(16, 17)):
    gt = rng.integers(0, 19, size=shape)
    pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, 19, size=shape))
    for c in n_absent:  # classes absent from both -> NaN IoU
        gt[gt == c] = 255
        pred[pred == c] = 0
    gt[rng.random(shape) < 0.1] = 255
    pred[rng.random(shape) < 0.03] = 255  # "no prediction" pixels count as misses
    return pred.astype(np.uint8), gt.astype(np.uint8)


def test_confusion_matrix_hand_case():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [255, 0, 2]])
    cm = ConfusionMatrix(num_classes=3, class_names=["a", "b", "c"]).update(pred, gt)
    # class 0: tp 1, gt 2, pred 1 -> 1/2 ; class 1: tp 1, gt 2, pred 2 -> 1/3 ; class 2: 1
    assert np.allclose(cm.iou(), [0.5, 1 / 3, 1.0])
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    d = cm.to_dict()
    assert d["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 1.0})
    assert d["miou"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    assert cm.miou([0, 2]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        cm.update(np.array([0]), np.array([7]))


def test_merge_equals_joint_update_and_subsets():
    rng = np.random.default_rng(0)
    pairs = [_random_pair(rng) for _ in range(4)]
    joint = ConfusionMatrix()
    a, b = ConfusionMatrix(), ConfusionMatrix()
    for i, (p, g) in enumerate(pairs):
        joint.update(p, g)
        (a if i % 2 else b).update(p, g)
    assert np.array_equal(a.merge(b).counts, joint.counts)
    iou = joint.iou()
    assert math.isnan(iou[16]) and math.isnan(iou[17])
    assert joint.miou() == pytest.approx(np.nanmean(iou))
    assert joint.miou("synthia16") == pytest.approx(np.nanmean(iou[list(SYNTHIA_16_CLASSES)]))
    assert joint.to_dict()["per_class_iou"]["train"] is None
    assert ConfusionMatrix().to_dict()["miou"] is None


def test_counts_made_elsewhere_add_up_as_updates_do():
    """``add_counts`` (what ``prnseg label --gt`` sums from its manifests) equals updating/merging."""
    rng = np.random.default_rng(1)
    p, g = _random_pair(rng)
    direct = ConfusionMatrix().update(p, g)
    assert np.array_equal(ConfusionMatrix().add_counts(direct.counts.ravel()).counts, direct.counts)
    with pytest.raises(ValueError, match="counts"):
        ConfusionMatrix().add_counts(np.zeros(19 * 19))
    s, t = rng.random(200), rng.random(200) < 0.3
    a = BinaryDetectionStats(n_bins=16).update(s[:90], t[:90])
    b = BinaryDetectionStats(n_bins=16).update(s[90:], t[90:])
    summed = BinaryDetectionStats(n_bins=16).add_counts(a.tp, a.fp, a.fn, a.tn, a.pos_hist, a.neg_hist)
    assert summed.merge(b).to_dict() == BinaryDetectionStats(n_bins=16).update(s, t).to_dict()
    with pytest.raises(ValueError, match="bins"):
        BinaryDetectionStats(n_bins=16).add_counts(pos_hist=np.zeros(8))


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    cm = ConfusionMatrix(num_classes=3).update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    assert cm.pixel_accuracy() == pytest.approx(2 / 3)


def test_miou_matches_cityscapesscripts(tmp_path):
    csev = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        reason="cityscapesscripts is not installed",
    )
    from PIL import Image

    rng = np.random.default_rng(7)
    ours = ConfusionMatrix()
    preds, gts = [], []
    for i in range(3):
        pred, gt = _random_pair(rng)
        ours.update(pred, gt)
        p = tmp_path / f"pred_{i}.png"
        g = tmp_path / f"city_{i:06d}_000019_gtFine_labelIds.png"
        Image.fromarray(trainid_to_labelid(pred)).save(p)
        Image.fromarray(trainid_to_labelid(gt)).save(g)
        preds.append(str(p))
        gts.append(str(g))

    args = csev.CArgs()
    for key, value in vars(csev.args).items():
        setattr(args, key, value)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = True
    args.exportFile = str(tmp_path / "result.json")
    csev.evaluateImgLists(preds, gts, args)
    result = json.loads((tmp_path / "result.json").read_text())

    iou = ours.iou()
    for c, name in enumerate(CITYSCAPES_CLASSES):
        theirs = result["classScores"][name]
        theirs = float("nan") if theirs is None else float(theirs)
        if math.isnan(theirs):
            assert math.isnan(iou[c]), name
        else:
            assert iou[c] == pytest.approx(theirs, abs=1e-6), name
    assert ours.miou() == pytest.approx(result["averageScoreClasses"], abs=1e-6)


def _brute_auroc(scores, targets):
    pos = scores[targets]
    neg = scores[~targets]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_auroc_exact_and_histogram_vs_brute_force():
    rng = np.random.default_rng(3)
    n_bins = 64
    for _ in range(5):
        t = rng.random(300) < 0.3
        # scores on bin centres (with many ties): the histogram AUROC is then exact
        s = (rng.integers(0, n_bins, 300) + t * rng.integers(0, 8, 300)).clip(0, n_bins - 1)
        s = (s + 0.5) / n_bins
        brute = _brute_auroc(s, t)
        assert auroc_exact(s, t) == pytest.approx(brute, abs=1e-12)
        stats = BinaryDetectionStats(n_bins=n_bins)
        stats.update(s[:150], t[:150]).merge(BinaryDetectionStats(n_bins=n_bins).update(s[150:], t[150:]))
        assert stats.auroc() == pytest.approx(brute, abs=1e-12)
    # continuous scores: the binned value stays within the documented tolerance
    t = rng.random(2000) < 0.2
    s = np.clip(rng.normal(0.4 + 0.2 * t, 0.15), 0, 1)
    stats = BinaryDetectionStats(n_bins=1024).update(s, t)
    assert stats.auroc() == pytest.approx(_brute_auroc(s, t), abs=2e-3)
    assert math.isnan(auroc_from_histograms(np.zeros(4), np.ones(4)))


def test_precision_recall_hand_case():
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.55, 0.2])
    targets = np.array([1, 1, 1, 0, 0, 0, 1], dtype=bool)
    valid = np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool)
    st = BinaryDetectionStats(threshold=0.5).update(scores, targets, valid)
    # flagged: 0.9, 0.8, 0.6, 0.55 -> tp 2, fp 2; missed: 0.3 -> fn 1; tn 1
    assert (st.tp, st.fp, st.fn, st.tn) == (2, 2, 1, 1)
    assert st.precision() == pytest.approx(0.5)
    assert st.recall() == pytest.approx(2 / 3)
    assert st.f1() == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert math.isnan(BinaryDetectionStats().precision())


def test_pseudo_label_quality_summary():
    gt = np.array([[0, 1, 2, 255]])
    raw = np.array([[0, 2, 2, 1]])
    refined = np.array([[0, 1, 2, 1]])
    noise = np.array([[0.1, 0.9, 0.2, 0.9]])
    conf = np.array([[0.99, 0.5, 0.97, 0.4]])
    q = PseudoLabelQuality(num_classes=3).update(raw, refined, gt, noise, conf)
    s = q.summary()
    assert s["refined"]["miou"] == pytest.approx(1.0)
    assert s["raw"]["miou"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert s["miou_gain"] == pytest.approx(1.0 - 0.5)
    det = s["noise_detector"]
    assert det["precision"] == 1.0 and det["recall"] == 1.0 and det["auroc"] == 1.0
    base = s["confidence_baseline"]
    assert base["recall"] == 1.0 and base["n_pixels"] == 3
    json.dumps(s)


def test_pseudo_label_quality_kept_scores_labels_under_the_noise_mask():
    gt = np.array([[0, 1, 2, 2, 255]])
    raw = refined = np.array([[0, 2, 2, 1, 1]])
    noise = np.array([[0.1, 0.9, 0.2, 0.6, 0.1]])  # flags both wrong pixels, keeps the right ones
    s = PseudoLabelQuality(num_classes=3, noise_threshold=0.5).update(raw, refined, gt, noise).summary()
    assert s["refined"]["miou"] < 1.0
    assert s["kept"]["miou"] == pytest.approx(1.0)
    assert s["kept"]["coverage"] == pytest.approx(2 / 4)
    half = PseudoLabelQuality(num_classes=3, noise_threshold=0.95).update(raw, refined, gt, noise).summary()
    assert half["kept"]["coverage"] == pytest.approx(1.0)
    assert half["kept"]["miou"] == pytest.approx(s["refined"]["miou"])
