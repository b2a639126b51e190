"""Helpers of the scripts in bench/ that decide what a benchmark run measures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from prnseg.training.data.synthetic import SYNTH_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adaptation_rewrites_a_benchmark_of_another_generator_version(tmp_path, capsys):
    adaptation = _load("adaptation")
    root = tmp_path / "data"
    args = ["--source", "2", "--target", "2", "--val", "1", "--size", "64x32", "--seed", "1"]
    adaptation.ensure_benchmark(root, args)
    marker = root / "synth.json"
    meta = json.loads(marker.read_text())
    assert meta["version"] == SYNTH_VERSION and meta["complete"]
    first = marker.stat().st_mtime_ns

    adaptation.ensure_benchmark(root, args)            # current and complete: reused as it is
    assert marker.stat().st_mtime_ns == first

    marker.write_text(json.dumps({**meta, "version": SYNTH_VERSION - 1}))
    adaptation.ensure_benchmark(root, args)
    assert json.loads(marker.read_text())["version"] == SYNTH_VERSION
    assert "writing it again" in capsys.readouterr().out


def test_prn_variants_target_labels_batches_pair_each_image_with_its_own_label(synth_root):
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_eval_dataset
    from prnseg.training.data.transforms import build_test_pipeline

    variants = _load("prn_variants")
    cfg = load_config("synthetic", [f"data.target.root={synth_root / 'cityscapes'}", "data.val.resize=[256,128]"])
    ds = build_eval_dataset("cityscapes", str(synth_root / "cityscapes"), "train")
    pipe = build_test_pipeline(resize=(256, 128))
    raw = [ds.load_raw(i) for i in range(len(ds))]
    batches = variants._labelled_target_batches(cfg, seed=3)
    flips = seen = 0
    for _ in range(4):
        x, y = next(batches)
        assert x.shape == (cfg.train.batch_size, 3, 128, 256) and y.shape == (cfg.train.batch_size, 128, 256)
        for img, lbl in zip(x.numpy(), y.numpy()):
            matches = [(i, flip) for i, (_, gt) in enumerate(raw) for flip in (False, True)
                       if np.array_equal(lbl, gt[:, ::-1] if flip else gt)]
            assert matches, "a label that is no target train label (or its mirror)"
            i, flip = matches[0]
            ref = pipe({"img": raw[i][0], "gt": None}, np.random.default_rng(0))["img"].transpose(2, 0, 1)
            np.testing.assert_allclose(img, ref[..., ::-1] if flip else ref, atol=1e-6)  # mirrored with its label
            flips += flip
            seen += 1
    assert 0 < flips < seen  # both orientations occur


def test_prn_variants_script_scores_a_uda_variant_and_the_target_label_bound(prn_checkpoint, synth_root, tmp_path):
    out = tmp_path / "variants.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "prn_variants.py"), "--checkpoint", str(prn_checkpoint),
                           "--data", str(synth_root), "--variants", "full", "target_labels+logits_only",
                           "--iters", "2", "--val-images", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["variants"]
    assert set(rows) == {"full", "target_labels+logits_only"}
    for row in rows.values():
        for key in ("raw_miou", "refined_miou", "noise_auroc", "max_softmax_auroc"):
            assert 0.0 <= row[key] <= 1.0
    assert rows["full"]["raw_miou"] == rows["target_labels+logits_only"]["raw_miou"]  # the same frozen teacher
    assert "target_labels+logits_only raw" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "prn_variants.py"), "--checkpoint", str(prn_checkpoint),
                          "--data", str(synth_root), "--variants", "target_label"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown variant part(s) target_label" in bad.stderr
