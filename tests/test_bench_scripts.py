"""Helpers of the scripts in bench/ that decide what a benchmark run measures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
    args = {"source": 2, "target": 2, "val": 1, "size": "32x64", "seed": 1}
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


def test_adaptation_rewrites_a_benchmark_of_another_gap_only_when_a_gap_is_asked_for(tmp_path, capsys):
    adaptation = _load("adaptation")
    root = tmp_path / "data"
    args = {"source": 2, "target": 2, "val": 1, "size": "32x64", "seed": 1, "gap": 0.7}
    adaptation.ensure_benchmark(root, args)
    marker = root / "synth.json"
    assert json.loads(marker.read_text())["gap"] == 0.7
    first = marker.stat().st_mtime_ns

    adaptation.ensure_benchmark(root, {k: v for k, v in args.items() if k != "gap"})   # no gap asked: kept
    assert marker.stat().st_mtime_ns == first
    assert "writing it again" not in capsys.readouterr().out

    adaptation.ensure_benchmark(root, {**args, "gap": 1.0})
    assert json.loads(marker.read_text())["gap"] == 1.0
    assert "gap 0.7" in capsys.readouterr().out
    benchmark = {"version": 4, "sizes": {"source": 5, "target": 5, "val": 2}, "image_size": [512, 256],
                 "config": "synthetic"}
    with_gap = adaptation.finish({"benchmark": {**benchmark, "gap": 0.7}, "runs": _hand_made_runs()})
    assert "appearance gap 0.7" in adaptation.report(with_gap)
    assert "appearance gap" not in adaptation.report(adaptation.finish({"benchmark": benchmark,
                                                                        "runs": _hand_made_runs()}))


def test_adaptation_grows_the_val_split_only_when_asked_and_keeps_the_train_images(tmp_path, capsys):
    adaptation = _load("adaptation")
    root = tmp_path / "data"
    args = {"source": 2, "target": 2, "val": 1, "size": "32x64", "seed": 1}
    adaptation.ensure_benchmark(root, args)
    train = sorted((root / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))
    before = [p.read_bytes() for p in train]
    adaptation.ensure_benchmark(root, {k: v for k, v in args.items() if k != "val"})   # no count asked: kept
    assert "writing it again" not in capsys.readouterr().out

    adaptation.ensure_benchmark(root, {**args, "val": 3})
    assert "1 val images" in capsys.readouterr().out
    assert json.loads((root / "synth.json").read_text())["counts"]["val"] == 3
    assert len(list((root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))) == 3
    assert [p.read_bytes() for p in train] == before


def test_adaptation_evaluates_a_trained_run_without_training_it_and_adapt_set_reaches_only_adaptations(tmp_path):
    adaptation = _load("adaptation")
    run = tmp_path / "seed0" / "source_only"
    run.mkdir(parents=True)
    assert adaptation.trained(run, 10) is None
    (run / "summary.json").write_text(json.dumps({"step": 10, "median_step_seconds": 0.1}))
    assert adaptation.trained(run, 10) is None            # no checkpoint
    (run / "last.pt").write_bytes(b"weights")
    assert adaptation.trained(run, 10)["step"] == 10
    assert adaptation.trained(run, 20) is None            # stopped short of the schedule: resumed instead

    args = adaptation.parse_args(["--set", "train.init_seed=0", "--adapt-set", "uda.pseudo_weight_mode=per_pixel",
                                  "--adapt-iters", "7", "--iters", "9"])
    data = tmp_path / "data"
    source = adaptation.run_config("source_only", 1, args, data, tmp_path)
    adapt = adaptation.run_config("self_training", 1, args, data, tmp_path)
    assert (source.uda.pseudo_weight_mode, source.train.init_seed, source.train.iters) == ("batch_ratio", 0, 9)
    assert (adapt.uda.pseudo_weight_mode, adapt.train.init_seed, adapt.train.iters) == ("per_pixel", 0, 7)


def test_prn_variants_target_labels_batches_pair_each_image_with_its_own_label(synth_root):
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_eval_dataset
    from prnseg.training.data.transforms import build_test_pipeline

    variants = _load("prn_variants")
    cfg = load_config("synthetic", [f"data.target.root={synth_root / 'cityscapes'}", "data.val.size=[128,256]"])
    ds = build_eval_dataset("cityscapes", str(synth_root / "cityscapes"), "train")
    pipe = build_test_pipeline(size=(128, 256))
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


def test_prn_variants_target_list_reads_only_the_listed_images(synth_root, tmp_path):
    """``--target-list`` (suggest.txt entries, relative to the labelled folder): every batch holds
    labels of the listed images only."""
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_eval_dataset

    variants = _load("prn_variants")
    cfg = load_config("synthetic", [f"data.target.root={synth_root / 'cityscapes'}", "data.val.size=[128,256]"])
    ds = build_eval_dataset("cityscapes", str(synth_root / "cityscapes"), "train")
    img_root = synth_root / "cityscapes" / "leftImg8bit" / "train"
    listed = [1, len(ds) - 1]
    lst = tmp_path / "suggest.txt"
    lst.write_text("".join(f"{ds.records[i].image.relative_to(img_root).as_posix()}\n" for i in listed))
    gts = [ds.load_raw(i)[1] for i in listed]
    batches = variants._labelled_target_batches(cfg, seed=0, target_list=str(lst))
    for _ in range(4):
        _, y = next(batches)
        for lbl in y.numpy():
            assert any(np.array_equal(lbl, gt) or np.array_equal(lbl, gt[:, ::-1]) for gt in gts)


@pytest.mark.slow
def test_prn_variants_script_scores_a_uda_variant_and_the_target_label_bound(prn_checkpoint, synth_root, tmp_path):
    out = tmp_path / "variants.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "prn_variants.py"), "--checkpoint", str(prn_checkpoint),
                           "--data", str(synth_root), "--variants", "full", "target_labels+logits_only", "prototype",
                           "--iters", "2", "--val-images", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["variants"]
    assert set(rows) == {"full", "target_labels+logits_only", "prototype"}
    assert 0.0 <= rows["prototype"]["rectified_miou"] <= 1.0 and "prototype-rectified labels" in proc.stdout
    for row in rows.values():
        for key in ("raw_miou", "refined_miou", "noise_auroc", "max_softmax_auroc"):
            assert 0.0 <= row[key] <= 1.0
    assert rows["full"]["raw_miou"] == rows["target_labels+logits_only"]["raw_miou"]  # the same frozen teacher
    assert "target_labels+logits_only raw" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "prn_variants.py"), "--checkpoint", str(prn_checkpoint),
                          "--data", str(synth_root), "--variants", "target_label"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown variant part(s) target_label" in bad.stderr


def test_adaptation_significance_rule_on_hand_made_numbers():
    adaptation = _load("adaptation")
    # consistent +2 over three seeds: mean 2.0 > 2 * std 0.1
    s = adaptation.significance({0: 0.52, 1: 0.53, 2: 0.51}, {0: 0.50, 1: 0.509, 2: 0.491})
    assert s["verdict"] == "gain" and abs(s["mean"] - 0.02) < 1e-9 and s["seeds"] == [0, 1, 2]
    # a large mean that one seed contradicts is not a gain
    s = adaptation.significance({0: 0.60, 1: 0.50, 2: 0.56}, {0: 0.50, 1: 0.52, 2: 0.50})
    assert s["mean"] > 0 and s["verdict"] == "not significant"
    # a consistent drop is a loss; one seed is never significant
    assert adaptation.significance({0: 0.40, 1: 0.41}, {0: 0.45, 1: 0.455})["verdict"] == "loss"
    assert adaptation.significance({0: 0.9}, {0: 0.1})["verdict"] == "not significant"
    assert adaptation.significance({0: 0.9}, {1: 0.1}) is None
    st = adaptation.mean_std([1.0, 2.0, 3.0])
    assert st["mean"] == 2.0 and abs(st["std"] - 1.0) < 1e-12


def _hand_made_runs():
    runs = []
    for seed, (so, st, orc, src) in enumerate([(0.40, 0.50, 0.70, 0.80), (0.41, 0.52, 0.71, 0.79),
                                               (0.39, 0.51, 0.69, 0.81)]):
        pc = {"road": so, "pole": None}
        runs += [{"mode": "source_only", "seed": seed, "iters": 10, "target_miou": so, "source_val_miou": src,
                  "step_s": 0.2, "peak_rss_mb": 500.0, "wall_s": 60.0, "per_class_iou": pc},
                 {"mode": "self_training", "seed": seed, "iters": 5, "target_miou": st, "source_val_miou": src,
                  "teacher_miou": st, "step_s": 0.4, "peak_rss_mb": 600.0, "wall_s": 90.0,
                  "per_class_iou": {"road": st, "pole": 0.1}},
                 {"mode": "oracle", "seed": seed, "iters": 10, "target_miou": orc, "source_val_miou": 0.3,
                  "step_s": 0.2, "peak_rss_mb": 500.0, "wall_s": 60.0, "per_class_iou": {"road": orc, "pole": 0.2}}]
    return runs


def test_adaptation_summary_calibration_and_readme_section(tmp_path):
    adaptation = _load("adaptation")
    doc = adaptation.finish({"benchmark": {"version": 3, "sizes": {"source": 5, "target": 5, "val": 2},
                                           "image_size": [512, 256], "config": "synthetic",
                                           "warm_start": "source_only"},
                             "command": "python bench/adaptation.py --seeds 0,1,2", "runs": _hand_made_runs()})
    s = doc["summary"]
    assert set(s) == {"source_only", "self_training", "oracle"}
    assert abs(s["source_only"]["target_miou"]["mean"] - 0.40) < 1e-9 and s["source_only"]["target_miou"]["n"] == 3
    assert "pl_raw_miou" not in s["source_only"]                     # absent metrics are omitted
    cal = doc["calibration"]
    assert cal["oracle_miou"]["holds"] and cal["source_val_miou"]["holds"]
    assert abs(cal["source_only_over_oracle"]["value"] - 0.40 / 0.70) < 1e-9 and cal["source_only_over_oracle"]["holds"]
    assert abs(cal["self_training_gap_closed"]["value"] - (0.51 - 0.40) / (0.70 - 0.40)) < 1e-9
    assert doc["significance"]["self_training_minus_source_only"]["verdict"] == "gain"
    assert doc["per_class"]["source_only"]["pole"] is None and abs(doc["per_class"]["oracle"]["pole"] - 0.2) < 1e-9
    text = adaptation.report(doc)
    assert "| self_training |" in text and "51.0 ± 1.0" in text and "**gain**" in text and "| pole |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{adaptation.README_BEGIN}\nold numbers\n{adaptation.README_END}\noutro\n")
    (tmp_path / "a.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "adaptation.py"), "--from-json",
                           str(tmp_path / "a.json"), "--readme", str(readme)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    body = readme.read_text()
    assert "old numbers" not in body and body.startswith("intro\n") and body.endswith("outro\n")
    assert text in body
    # an earlier version's table lives in its own section; --readme-section writes that one only
    v3_begin, v3_end = adaptation.section_markers("bench/adaptation.py", "adaptation-results-v3")
    readme.write_text(f"{adaptation.README_BEGIN}\nnew\n{adaptation.README_END}\n{v3_begin}\nold\n{v3_end}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "adaptation.py"), "--from-json",
                           str(tmp_path / "a.json"), "--readme", str(readme), "--readme-section",
                           "adaptation-results-v3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    body = readme.read_text()
    assert "\nnew\n" in body and "\nold\n" not in body and body.index(v3_begin) < body.index(text)


@pytest.mark.slow
def test_adaptation_script_writes_runs_with_source_and_target_miou(synth_root, tmp_path):
    out = tmp_path / "adapt"
    json_path = tmp_path / "a.json"
    sets = ["data.source.size=[128,256]", "data.target.size=[128,256]", "data.val.size=[128,256]",
            "data.crop=[128,128]", "data.workers=0", "train.checkpoint_every=1"]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "adaptation.py"), "--out", str(out), "--data",
                           str(synth_root), "--modes", "source_only,oracle", "--seeds", "0", "--iters", "2",
                           "--holdout-images", "2", "--json", str(json_path),
                           *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(json_path.read_text())
    assert doc["benchmark"]["version"] == SYNTH_VERSION and doc["benchmark"]["sizes"]["val"] == 4
    assert [(r["mode"], r["seed"]) for r in doc["runs"]] == [("source_only", 0), ("oracle", 0)]
    for r in doc["runs"]:
        assert 0 <= r["target_miou"] <= 1 and 0 <= r["source_val_miou"] <= 1 and r["iters"] == 2
        assert r["step_s"] > 0 and r["peak_rss_mb"] > 0 and r["wall_s"] > 0
    assert set(doc["summary"]["oracle"]["target_miou"]) == {"mean", "std", "n"}
    assert (out / "seed0" / "oracle" / "run.json").exists()
    assert "| oracle |" in proc.stdout
    # --collect reports what finished and trains nothing: no prn run is started
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "adaptation.py"), "--out", str(out), "--data",
                           str(synth_root), "--modes", "source_only,oracle,prn", "--seeds", "0", "--collect",
                           "--holdout-images", "2", "--json", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["mode"] for r in json.loads((tmp_path / "c.json").read_text())["runs"]] == ["source_only", "oracle"]
    assert not (out / "seed0" / "prn").exists()


def _few_label_rows():
    rows = []
    for seed, (raw, sug, rnd, st) in enumerate([(0.30, 0.36, 0.32, 0.31), (0.31, 0.37, 0.325, 0.30),
                                                (0.29, 0.355, 0.33, 0.305)]):
        rows.append({"seed": seed, "k": 0, "strategy": "prn", "target_miou": st - 0.01, "pl_raw_miou": raw,
                     "pl_written_miou": raw, "noise_auroc": 0.8, "softmax_auroc": 0.85, "wall_s": None})
        for strategy, v in (("suggest", sug), ("random", rnd)):
            rows.append({"seed": seed, "k": 10, "strategy": strategy, "target_miou": v, "pl_raw_miou": raw,
                         "pl_written_miou": v + 0.01, "noise_auroc": 0.8, "softmax_auroc": 0.85, "wall_s": 600.0})
    return rows


def test_few_labels_summary_judges_chosen_against_random_and_writes_the_readme(tmp_path):
    few = _load("few_labels")
    doc = few.summarise({"benchmark": {"version": 3, "seeds": [0, 1, 2]}, "command": "python bench/few_labels.py",
                         "runs": _few_label_rows(),
                         "self_training": [{"seed": s, "target_miou": v} for s, v in enumerate((0.31, 0.30, 0.305))]})
    sig = doc["significance"]
    assert sig["suggest_k10_minus_random_k10:target_miou"]["verdict"] == "gain"
    assert sig["suggest_k10_minus_self_training:target_miou"]["verdict"] == "gain"
    assert sig["suggest_k10_written_minus_raw:pl_miou"]["verdict"] == "gain"
    assert doc["summary"]["random_k10"]["target_miou"]["n"] == 3
    text = few.report(doc)
    assert "| 10 | suggest | 0, 1, 2 | 36.2 ± 0.8 |" in text and "| 0 | - | 0, 1, 2 |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{few.README_BEGIN}\nold\n{few.README_END}\nb\n")
    (tmp_path / "f.json").write_text(json.dumps(doc))
    subprocess.run([sys.executable, str(ROOT / "bench" / "few_labels.py"), "--from-json", str(tmp_path / "f.json"),
                    "--readme", str(readme)], check=True, capture_output=True)
    body = readme.read_text()
    assert "old" not in body and "36.2 ± 0.8" in body and body.startswith("a\n") and body.endswith("b\n")
    begin, end = few.readme_markers("few-label-rerun")
    readme.write_text(f"{body}{begin}\nold\n{end}\n")
    subprocess.run([sys.executable, str(ROOT / "bench" / "few_labels.py"), "--from-json", str(tmp_path / "f.json"),
                    "--readme", str(readme), "--readme-section", "few-label-rerun"], check=True, capture_output=True)
    assert readme.read_text().count("36.2 ± 0.8") == 2 and "old" not in readme.read_text()


def test_few_labels_scores_the_prn_argmax_beside_the_written_labels(tmp_path):
    few = _load("few_labels")
    pl = {"raw": {"miou": 0.40}, "refined": {"miou": 0.41}, "noise_detector": {"auroc": 0.85},
          "confidence_baseline": {"auroc": 0.9}}
    (tmp_path / "old.json").write_text(json.dumps({"miou": 0.38, "pseudo_labels": pl}))
    (tmp_path / "new.json").write_text(json.dumps({"miou": 0.38, "pseudo_labels": {
        **pl, "written_at": {"0": {"miou": 0.37, "relabelled": 0.2}}}}))
    assert few.eval_row(tmp_path / "old.json", 0, 5, "random", 1.0)["pl_prn_argmax_miou"] is None
    assert few.eval_row(tmp_path / "new.json", 0, 5, "random", 1.0)["pl_prn_argmax_miou"] == 0.37
    assert few.ARGMAX_SWEEP == (0.0,)
    rows = [{**r, "pl_prn_argmax_miou": r["pl_raw_miou"] - 0.02 - 0.001 * r["seed"]} for r in _few_label_rows()]
    doc = few.summarise({"benchmark": {"version": 3, "seeds": [0, 1, 2]}, "command": "c", "runs": rows,
                         "self_training": []})
    assert doc["significance"]["suggest_k10_prn_argmax_minus_raw:pl_miou"]["verdict"] == "loss"
    assert "30.0 ± 1.0 -> 37.2 ± 0.8 (PRN argmax 27.9 ± 1.1)" in few.report(doc)
    legacy = few.summarise({"benchmark": {"version": 3, "seeds": [0]}, "command": "c", "runs": _few_label_rows(),
                            "self_training": []})
    assert "PRN argmax" not in few.report(legacy)


def test_few_labels_collect_reports_the_finished_runs_and_trains_nothing(tmp_path):
    out = tmp_path / "runs"
    (out / "data").mkdir(parents=True)
    (out / "data" / "synth.json").write_text(json.dumps({"version": 3}))
    rows = [r for r in _few_label_rows() if r["k"] == 10 and r["seed"] < 2]
    for r in rows:
        d = out / "few_labels" / f"seed{r['seed']}" / f"{r['strategy']}_k{r['k']}"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps(r))
    (out / "seed0" / "self_training").mkdir(parents=True)
    (out / "seed0" / "self_training" / "eval.json").write_text(json.dumps({"miou": 0.31}))
    # seed 1's K=5 runs and seed 2 never ran: --collect leaves them out instead of training them
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "few_labels.py"), "--out", str(out), "--seeds", "0,1,2",
                          "--k", "5,10", "--collect", "--json", str(tmp_path / "f.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "f.json").read_text())
    assert sorted((r["seed"], r["k"], r["strategy"]) for r in doc["runs"]) == \
        [(0, 10, "random"), (0, 10, "suggest"), (1, 10, "random"), (1, 10, "suggest")]
    assert "--collect" not in doc["command"] and "--k 5,10" in doc["command"]
    assert doc["self_training"] == [{"seed": 0, "target_miou": 0.31}]
    assert "| 10 | suggest | 0, 1 |" in res.stdout
    assert not (out / "few_labels" / "seed2").exists() and not (out / "few_labels" / "seed1" / "suggest_k5").exists()


def test_few_labels_random_choice_is_seeded_and_suggest_takes_the_queue_prefix():
    few = _load("few_labels")
    images = [f"c/{i}.png" for i in range(50)]
    a = few.chosen("random", 1, 10, [], images)
    assert a == few.chosen("random", 1, 10, [], images) and len(set(a)) == 10
    assert a != few.chosen("random", 2, 10, [], images)
    assert few.chosen("suggest", 0, 2, ["x.png", "y.png", "z.png"], images) == ["x.png", "y.png"]
    assert few.chosen("suggest_split", 0, 2, ["x.png", "y.png", "z.png"], images) == ["x.png", "y.png"]
    assert few.needs_queue(["suggest_split"]) and few.needs_queue(["random", "suggest"])
    assert not few.needs_queue(["random"]) and not few.needs_queue(["random_prn"]) and few.needs_queue(["suggest_prn"])
    assert few.STRATEGY_OVERRIDES["suggest_split"] == {"data.target_labeled.prn_fraction": 0.5}
    # the PRN-only strategies: the same images as their student counterparts, all of them for the PRN
    assert few.chosen("random_prn", 1, 10, [], images) == a
    assert few.chosen("suggest_prn", 0, 2, ["x.png", "y.png", "z.png"], images) == ["x.png", "y.png"]
    assert few.STRATEGY_OVERRIDES["suggest_prn"] == few.STRATEGY_OVERRIDES["random_prn"] == \
        {"data.target_labeled.prn_fraction": 1.0}
    assert "suggest" not in few.STRATEGY_OVERRIDES and "random" not in few.STRATEGY_OVERRIDES


def test_few_labels_judges_the_split_against_suggest():
    few = _load("few_labels")
    rows = [r for r in _few_label_rows() if r["strategy"] == "suggest"]
    split = [{**r, "strategy": "suggest_split", "target_miou": r["target_miou"] - 0.01,
              "pl_written_miou": r["pl_raw_miou"] + 0.02 + 0.001 * r["seed"]} for r in rows]
    doc = few.summarise({"benchmark": {"version": 3, "seeds": [0, 1, 2]}, "command": "c", "runs": rows + split,
                         "self_training": []})
    sig = doc["significance"]
    assert sig["suggest_split_k10_minus_suggest_k10:target_miou"]["verdict"] == "loss"
    assert sig["suggest_split_k10_written_minus_raw:pl_miou"]["verdict"] == "gain"
    assert "| 10 | suggest_split | 0, 1, 2 |" in few.report(doc)


def test_few_labels_judges_the_prn_only_strategies_against_random_and_self_training():
    few = _load("few_labels")
    rows = [r for r in _few_label_rows() if r["strategy"] == "suggest"]
    prn = [{**r, "strategy": "suggest_prn", "target_miou": r["target_miou"] - 0.05,
            "pl_written_miou": r["pl_raw_miou"] + 0.03 + 0.001 * r["seed"]} for r in rows]
    rnd = [{**r, "strategy": "random_prn", "target_miou": r["target_miou"] - 0.05 - 0.01 * (r["seed"] % 2),
            "pl_written_miou": r["pl_raw_miou"]} for r in rows]
    st = [{"seed": r["seed"], "target_miou": r["target_miou"] - 0.2} for r in rows]
    doc = few.summarise({"benchmark": {"version": 4, "seeds": [0, 1, 2]}, "command": "c", "runs": rows + prn + rnd,
                         "self_training": st})
    sig = doc["significance"]
    assert sig["suggest_prn_k10_minus_suggest_k10:target_miou"]["verdict"] == "loss"
    assert sig["suggest_prn_k10_minus_random_prn_k10:target_miou"]["verdict"] == "not significant"
    assert sig["suggest_prn_k10_minus_self_training:target_miou"]["verdict"] == "gain"
    assert sig["suggest_prn_k10_written_minus_raw:pl_miou"]["verdict"] == "gain"
    assert sig["random_prn_k10_written_minus_raw:pl_miou"]["differences"] == [0.0, 0.0, 0.0]
    assert sig["suggest_prn_k10_noise_mask_minus_max_softmax:auroc"]["differences"] == pytest.approx([-0.05] * 3)
    assert not any("suggest_k10_noise_mask" in name for name in sig)
    assert "| 10 | random_prn | 0, 1, 2 |" in few.report(doc)


def test_noise_signals_auroc_and_verdicts_on_hand_made_numbers():
    signals = _load("noise_signals")
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.8])
    wrong = np.array([False, False, True, True, False])
    # wrong-vs-right pairs: 0.35 beats 0.1 only; 0.8 beats 0.1 and 0.4 and ties 0.8 -> 3.5 of 6
    assert signals.auroc(score, wrong) == pytest.approx(3.5 / 6)
    assert signals.auroc(-score[::-1], wrong[::-1]) == pytest.approx(1 - 3.5 / 6)
    base = {k: 0.80 for k in signals.SIGNALS}
    rows = {s: {**base, "max_softmax": 0.86 + d, "flip_softmax": 0.87 + d, "entropy": 0.86 + 2 * d}
            for s, d in enumerate((0.0, 0.002, -0.002))}
    doc = signals.summarise(rows)
    assert doc["vs_max_softmax"]["flip_softmax"]["verdict"] == "gain"
    assert doc["vs_max_softmax"]["prn_noise"]["verdict"] == "loss"
    assert doc["vs_max_softmax"]["entropy"]["verdict"] == "not significant"
    assert "| flip_softmax | 87.00 ± 0.20 | +1.00 ± 0.00 | gain |" in signals.report(doc)


def test_label_tta_judges_written_against_raw_and_tta_against_plain():
    lt = _load("label_tta")
    rows = {v: {s: {"raw_miou": 0.30 + d, "written_miou": 0.30 + d + gain, "kept_miou": 0.33 + d,
                    "kept_coverage": 0.8, "noise_auroc": auroc + d, "noise_precision": 0.5, "noise_recall": 0.5,
                    "seconds": 1.0} for s, d in enumerate((0.0, 0.01, -0.01))}
            for v, gain, auroc in (("plain", 0.001, 0.81), ("tta", 0.012, 0.88), ("tta_la", 0.02, 0.88))}
    rows["tta"][1]["written_miou"] += 0.001
    rows["tta_la"][2]["written_miou"] -= 0.001
    doc = lt.summarise(rows)
    sig = doc["significance"]
    assert sig["tta:written_miou_minus_raw_miou"]["verdict"] == "gain"
    assert sig["tta_minus_plain:noise_auroc"]["verdict"] == "gain"
    assert sig["tta_la_minus_tta:written_miou"]["verdict"] == "gain"
    assert sig["tta_la_minus_tta:noise_auroc"]["verdict"] == "not significant"
    assert "| tta | 30.00 ± 1.00 | 31.23 ± 1.05 |" in lt.report(doc)
    rows["prn_mask"] = {s: {**r, "noise_auroc": r["noise_auroc"] - 0.05 - 0.001 * s} for s, r in rows["plain"].items()}
    sig = lt.summarise(rows)["significance"]
    assert sig["plain_minus_prn_mask:noise_auroc"]["verdict"] == "gain"
    assert sig["plain_minus_prn_mask:written_miou"]["verdict"] == "not significant"


def test_label_tta_gives_the_prn_mask_variant_its_own_export(tmp_path):
    lt = _load("label_tta")
    assert lt.model_dir(tmp_path, 1, "prn", "plain") == tmp_path / "few_labels" / "seed1" / "model"
    assert lt.model_dir(tmp_path, 1, "prn", "tta_la") == tmp_path / "few_labels" / "seed1" / "model"
    assert lt.model_dir(tmp_path, 1, "prn", "prn_mask") == tmp_path / "few_labels" / "seed1" / "model_prn_mask"
    assert lt.model_dir(tmp_path, 2, "prn_la", "plain") == tmp_path / "label_tta" / "seed2_prn_la" / "model"
    assert lt.NOISE_FROM == {"prn_mask": "prn"}


def test_logit_adjust_scores_adjusted_labels_against_raw_on_hand_made_maps():
    la = _load("logit_adjust")
    # two pixels of class 0 and one of class 1; class 1 is rare in the teacher's probabilities, and the
    # third pixel's teacher nearly gives it class 1: adjustment flips that pixel only
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45]], np.float32).T.reshape(1, 2, 1, 3)
    gt = np.array([[[0, 0, 1]]], np.uint8)
    row = la.seed_row(p, p, gt, [0.5])
    assert row["miou_raw"] == pytest.approx((2 / 3 + 0) / 2)
    assert row["miou_raw_la0.5"] == 1.0 and row["miou_tta_la0.5"] == 1.0
    # a given prior (the recorded one) replaces the images' own: a uniform prior changes nothing
    flat = la.seed_row(p, p, gt, [0.5], prior=np.array([0.5, 0.5]))
    assert flat["miou_raw_la0.5"] == flat["miou_raw"]


def _fake_training(module, monkeypatch, steps: int):
    """Stand-ins for the bench's training and scoring subprocesses: training writes what a finished
    run leaves (checkpoint, summary), scoring a minimal eval.json."""
    def isolated(function, cfg, run_dir, resume=False):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "last.pt").write_bytes(b"weights")
        (run_dir / "summary.json").write_text(json.dumps({"step": steps, "median_step_seconds": 0.1}))

    def evaluate(ckpt, data, json_path, **options):
        m = {"miou": 0.5, "per_class_iou": {"road": 0.5}, "pseudo_labels": {
            "raw": {"miou": 0.4}, "refined": {"miou": 0.41}, "noise_detector": {"auroc": 0.8},
            "confidence_baseline": {"auroc": 0.9}}}
        json_path.write_text(json.dumps(m))
        return m

    monkeypatch.setattr(module, "isolated", isolated)
    monkeypatch.setattr(module, "evaluate", evaluate)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_resumed_run_reports_no_wall_time_instead_of_its_last_part(tmp_path, monkeypatch, resumed):
    """The wall time of a run trained in parts would be only its last part's: such a row has none."""
    adaptation, few = _load("adaptation"), _load("few_labels")
    _fake_training(adaptation, monkeypatch, 9)
    _fake_training(few, monkeypatch, 7)
    args = adaptation.parse_args(["--iters", "9", "--adapt-iters", "7"])
    run = tmp_path / "seed0" / "source_only"
    few_run = tmp_path / "few_labels" / "seed0" / "random_k5"
    if resumed:   # a checkpoint short of the schedule: the bench resumes it
        for d in (run, few_run):
            d.mkdir(parents=True)
            (d / "last.pt").write_bytes(b"part")
    row = adaptation.run_one("source_only", 0, args, tmp_path / "data", tmp_path / "held", tmp_path)
    few_args = few.parse_args(["--out", str(tmp_path), "--adapt-iters", "7"])
    few_row = few.run_one(0, 5, "random", ["a.png"], few_args, tmp_path / "data", tmp_path)
    for r, path in ((row, run / "run.json"), (few_row, few_run / "run.json")):
        on_disk = json.loads(path.read_text())
        assert ("wall_s" in r, "wall_s" in on_disk) == (not resumed, not resumed)
        assert r["target_miou"] == on_disk["target_miou"] == 0.5


def test_few_labels_wall_times_keep_the_seeds_places_where_a_run_has_none():
    few = _load("few_labels")
    rows = [{**r, "wall_s": None} if (r["seed"], r["strategy"]) == (1, "random") else r for r in _few_label_rows()]
    doc = few.summarise({"benchmark": {"version": 4, "seeds": [0, 1, 2]}, "command": "c", "runs": rows,
                         "self_training": []})
    lines = few.report(doc).splitlines()
    assert [ln.rsplit("|", 2)[1].strip() for ln in lines if ln.startswith(("| 0 |", "| 10 |"))] == \
        ["-", "10.0, -, 10.0", "10.0, 10.0, 10.0"]
