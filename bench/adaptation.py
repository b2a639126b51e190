"""Adaptation benchmark on the built-in synthetic benchmark, over seeds.

For every seed, trains each mode (``source_only``, ``self_training``, ``prn``, ``oracle``; each a
``prnseg.api.train`` call in its own fresh interpreter, ``prnseg.api.run_isolated``), evaluates it
on the target val split and on held-out source images with ``prnseg.api.evaluate``, and prints
one table of means ± std over the seeds: target val mIoU, source mIoU, raw vs refined
pseudo-label mIoU, noise-mask AUROC next to the max-softmax baseline, median step time, peak
memory and wall time. Then the significance of each difference (a gain only when
the mean of the per-seed differences exceeds twice their std), the benchmark's calibration
figures, and per-class IoU of source-only, self-training and the oracle.

    python bench/adaptation.py --out runs/adaptation --seeds 0,1,2 --json runs/adaptation/adaptation.json
    python bench/adaptation.py --from-json runs/adaptation/adaptation.json --readme README.md

Each finished run leaves ``OUT/seed<S>/<mode>/run.json`` and the JSON file is rewritten after
every run, so an interrupted benchmark keeps what finished and the same command resumes it.
``oracle`` is ``source_only`` trained on the target train labels: the upper end of the gap.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from prnseg.atomic import atomic_write_text
from prnseg.formatting import pct

MODES = ("source_only", "self_training", "prn", "oracle", "self_training_mic", "prn_mic", "prn_prior", "prn_argmax",
         "prn_running_bn", "prn_tta", "self_training_tta", "self_training_la", "self_training_tta_la", "prn_la")
ADAPT_MODES = ("self_training", "prn", "self_training_mic", "prn_mic", "prn_prior", "prn_argmax", "prn_running_bn",
               "prn_tta", "self_training_tta", "self_training_la", "self_training_tta_la", "prn_la")
# a bench mode -> (uda.mode, extra overrides); the *_mic modes add masked image consistency (uda.mic),
# prn_prior starts the noise head from the teacher's max-softmax (prn.noise_prior), prn_argmax writes
# the PRN's argmax wherever it differs (the method as specified, before the pseudo-label rule),
# prn_running_bn writes the student's pseudo-labels with the PRN in eval mode (prn.pseudo_label_bn),
# prn_tta's PRN learns both heads on the target from the teacher's multi-scale + mirror labels
# (prn.refine_signal / prn.noise_signal target_tta), its noise head starting from max-softmax;
# self_training_tta takes the teacher's pseudo-labels from multi-scale + mirror averaging (uda.pseudo_label_tta);
# self_training_la adjusts them by the teacher's running target class marginal (uda.pseudo_label_logit_adjustment
# 0.25), self_training_tta_la does both, prn_la is prn on the adjusted labels
MODE_SETS = {"self_training_mic": ("self_training", {"uda.mic.enabled": True}),
             "prn_mic": ("prn", {"uda.mic.enabled": True}),
             "prn_prior": ("prn", {"prn.noise_prior": "max_softmax"}),
             "prn_argmax": ("prn", {"prn.refine_min_confidence": 0.0}),
             "prn_running_bn": ("prn", {"prn.pseudo_label_bn": "running"}),
             "prn_tta": ("prn", {"prn.refine_signal": "target_tta", "prn.noise_signal": "target_tta",
                                 "prn.noise_prior": "max_softmax"}),
             "self_training_tta": ("self_training", {"uda.pseudo_label_tta": True}),
             "self_training_la": ("self_training", {"uda.pseudo_label_logit_adjustment": 0.25}),
             "self_training_tta_la": ("self_training", {"uda.pseudo_label_tta": True,
                                                        "uda.pseudo_label_logit_adjustment": 0.25}),
             "prn_la": ("prn", {"uda.pseudo_label_logit_adjustment": 0.25})}
METRICS = ("target_miou", "source_val_miou", "pl_raw_miou", "pl_refined_miou", "noise_auroc", "softmax_auroc",
           "teacher_miou", "step_s", "peak_rss_mb", "wall_s")
# (mode, baseline): the differences the table judges
COMPARISONS = (("self_training", "source_only"), ("prn", "source_only"), ("prn", "self_training"),
               ("oracle", "source_only"), ("self_training_mic", "self_training"), ("prn_mic", "self_training"),
               ("prn_mic", "self_training_mic"), ("prn_prior", "self_training"), ("prn_prior", "prn"),
               ("prn", "prn_argmax"), ("prn_running_bn", "prn"), ("prn_tta", "self_training"), ("prn_tta", "prn"),
               ("self_training_tta", "self_training"), ("self_training_la", "self_training"),
               ("self_training_tta_la", "self_training"), ("self_training_tta_la", "self_training_tta"),
               ("prn_la", "self_training"), ("prn_la", "prn"), ("prn_la", "self_training_la"))
# The paper's regime: source fits its domain, source-only ~0.6 of the oracle, self-training closes much of the gap
CALIBRATION = {"source_val_min": 0.70, "oracle_min": 0.65, "ratio": (0.45, 0.65), "gap_closed_min": 0.40,
               "std_max": 0.015}


def section_markers(script: str, section: str) -> tuple[str, str]:
    """The README markers a bench script's table goes between: "<!-- SECTION:begin (written by
    SCRIPT --readme; do not edit) -->" and "<!-- SECTION:end -->"."""
    return (f"<!-- {section}:begin (written by {script} --readme; do not edit) -->", f"<!-- {section}:end -->")


README_SECTION = "adaptation-results"
README_BEGIN, README_END = section_markers("bench/adaptation.py", README_SECTION)


def say(text: str) -> None:
    print(f"$ {text}", flush=True)


def isolated(function: str, *args, **kwargs):
    """``prnseg.api.<function>`` in a fresh interpreter, as each ``prnseg`` process was: this
    script's process stays small (no torch), so a run's ``peak_rss_mb`` (the child's ru_maxrss,
    which starts from its parent's high-water mark) is its own, and no run inherits another's state."""
    from prnseg import api

    return api.run_isolated(function, *args, **kwargs)


def ensure_benchmark(root: Path, synth: dict, version: int | None = None) -> None:
    """Write the synthetic benchmark at ``root`` (``synth``: :func:`prnseg.api.synth` options such
    as ``source``, ``target``, ``val``, ``size``, ``seed``, ``gap``) unless a complete one of ``version``
    is there.

    A benchmark from another generator version (or an interrupted one) is written again: its
    numbers would not be comparable with this version's. So is one of another appearance gap or
    val count, when ``synth`` names one; without ``gap`` (``val``) the benchmark there is taken at
    whatever gap (val count) it was written with. Every image is seeded on its own, so a benchmark
    written again with more val images has the same train images: runs trained on it stay valid.
    """
    from prnseg.training.data.synthetic import SYNTH_VERSION

    version = SYNTH_VERSION if version is None else int(version)
    marker = root / "synth.json"
    if not marker.exists():
        say(f"synth {root} {synth} version {version}")
        isolated("synth", root, version=version, **synth)
        return
    try:
        meta = json.loads(marker.read_text())
    except ValueError:
        meta = {}
    found = {"gap": float(meta.get("gap", 1.0)), "val": (meta.get("counts") or {}).get("val")}
    matches = all(found[k] == synth[k] for k in found if k in synth)
    if meta.get("version") == version and meta.get("complete") and matches:
        return
    wanted = f"generator version {version}" + (f", gap {synth['gap']:g}" if "gap" in synth else "") + \
        (f", {synth['val']} val images" if "val" in synth else "")
    print(f"{root}: not a complete benchmark of {wanted} (found version {meta.get('version')}, "
          f"gap {found['gap']:g}, {found['val']} val images, complete={meta.get('complete')}); writing it again",
          flush=True)
    isolated("synth", root, version=version, overwrite=True, **synth)


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": m, "std": math.sqrt(var), "n": n}


def significance(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Per-seed differences a - b over the seeds both have; a gain only when their mean exceeds
    twice their std (so one seed, or differences that disagree in sign, never count)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    st = mean_std(d)
    gain = len(d) >= 2 and st["mean"] > 2 * st["std"]
    loss = len(d) >= 2 and -st["mean"] > 2 * st["std"]
    return {"seeds": seeds, "differences": d, "mean": st["mean"], "std": st["std"],
            "verdict": "gain" if gain else "loss" if loss else "not significant"}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rs = [r for r in runs if r["mode"] == mode]
        out[mode] = {k: mean_std([r[k] for r in rs]) for k in METRICS if all(r.get(k) is not None for r in rs)}
    return out


def per_metric(runs: list[dict], mode: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs if r["mode"] == mode and r.get(key) is not None}


def calibration(runs: list[dict], summary: dict) -> dict:
    """The benchmark's four calibration figures (means over seeds) and whether each holds."""
    c: dict = {}
    so, orc, st = (summary.get(m, {}).get("target_miou") for m in ("source_only", "oracle", "self_training"))
    src = summary.get("source_only", {}).get("source_val_miou")
    if src:
        c["source_val_miou"] = {"value": src["mean"], "target": f">= {CALIBRATION['source_val_min']}",
                                "holds": src["mean"] >= CALIBRATION["source_val_min"]}
    if orc:
        c["oracle_miou"] = {"value": orc["mean"], "target": f">= {CALIBRATION['oracle_min']}",
                            "holds": orc["mean"] >= CALIBRATION["oracle_min"]}
    if so and orc:
        lo, hi = CALIBRATION["ratio"]
        r = so["mean"] / orc["mean"]
        c["source_only_over_oracle"] = {"value": r, "target": f"{lo} .. {hi}", "holds": lo <= r <= hi}
    if so and orc and st:
        g = (st["mean"] - so["mean"]) / (orc["mean"] - so["mean"]) if orc["mean"] != so["mean"] else float("nan")
        c["self_training_gap_closed"] = {"value": g, "target": f">= {CALIBRATION['gap_closed_min']}",
                                         "holds": g >= CALIBRATION["gap_closed_min"]}
    stds = {m: s["target_miou"]["std"] for m, s in summary.items() if "target_miou" in s and s["target_miou"]["n"] > 1}
    if stds:
        c["max_target_miou_std"] = {"value": max(stds.values()), "target": f"<= {CALIBRATION['std_max']}",
                                    "holds": max(stds.values()) <= CALIBRATION["std_max"]}
    return c


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------

def _ms(s: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if s is None:
        return "-"
    if s["n"] == 1:
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def _gap_note(benchmark: dict) -> str:
    """The appearance gap, named only when it is not the generator's default."""
    gap = benchmark.get("gap", 1.0)
    return "" if gap == 1.0 else f", appearance gap {gap:g}"


def report(doc: dict) -> str:
    """The Markdown the README's Results section holds, entirely from ``doc`` (the JSON)."""
    runs, summary = doc["runs"], doc["summary"]
    b = doc["benchmark"]
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"Synthetic benchmark version {b['version']} ({b['sizes']['source']} source, {b['sizes']['target']} "
             f"target train, {b['sizes']['val']} target val images at {b['image_size'][0]}x{b['image_size'][1]}"
             f"{_gap_note(b)}), "
             f"`{b['config']}` config, seeds {', '.join(map(str, seeds))}; "
             f"mean ± std over each mode's seeds (sample std; a run that did not finish is absent). Produced by:", "",
             "```bash", doc.get("command", "python bench/adaptation.py"), "```", "",
             "| mode | seeds | iterations | target val mIoU | held-out source mIoU | pseudo-labels raw -> refined | "
             "noise AUROC (max-softmax) | median step (s) | peak RSS (MB) | wall per run (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, s in summary.items():
        its = sorted({r.get("iters") for r in runs if r["mode"] == mode}, key=str)
        start = " (warm start: source_only)" if mode in ADAPT_MODES and b.get("warm_start") else ""
        pl = (f"{_ms(s.get('pl_raw_miou'))} -> {_ms(s.get('pl_refined_miou'))}" if "pl_raw_miou" in s
              else (f"teacher {_ms(s.get('teacher_miou'))}" if "teacher_miou" in s else "-"))
        auroc = (f"{_ms(s.get('noise_auroc'))} ({_ms(s.get('softmax_auroc'))})" if "noise_auroc" in s else "-")
        walls = ", ".join(f"{r['wall_s'] / 60:.1f}" for r in runs if r["mode"] == mode and r.get("wall_s"))
        mode_seeds = ", ".join(str(r["seed"]) for r in runs if r["mode"] == mode)
        lines.append(f"| {mode} | {mode_seeds} | {', '.join(map(str, its))}{start} | {_ms(s.get('target_miou'))} | "
                     f"{_ms(s.get('source_val_miou'))} | {pl} | {auroc} | {_ms(s.get('step_s'), 1, 3)} | "
                     f"{_ms(s.get('peak_rss_mb'), 1, 0)} | {walls} |")
    sig = doc.get("significance", {})
    if sig:
        lines += ["", "Differences in target val mIoU (per-seed differences; a gain or loss only when their "
                  "mean exceeds twice their std):", ""]
        for name, s in sig.items():
            diffs = ", ".join(f"{100 * d:+.1f}" for d in s["differences"])
            lines.append(f"- {name.replace('_minus_', ' - ')}: {100 * s['mean']:+.1f} ± {100 * s['std']:.1f} "
                         f"({diffs}): **{s['verdict']}**")
    cal = doc.get("calibration", {})
    if cal:
        lines += ["", "Calibration (the paper's regime the benchmark aims at):", ""]
        names = {"source_val_miou": "source_only on held-out source images",
                 "oracle_miou": "oracle on target val",
                 "source_only_over_oracle": "source_only / oracle",
                 "self_training_gap_closed": "share of the source_only -> oracle gap that self_training closes",
                 "max_target_miou_std": "largest std of a mode's target mIoU"}
        for k, c in cal.items():
            v = f"{c['value']:.2f}" if k in ("source_only_over_oracle", "self_training_gap_closed") \
                else f"{100 * c['value']:.1f}"
            t = c["target"]
            if k not in ("source_only_over_oracle", "self_training_gap_closed"):
                t = " ".join(f"{100 * float(x):g}" if x.replace(".", "").isdigit() else x for x in t.split())
            lines.append(f"- {names[k]}: {v} (target {t}): {'holds' if c['holds'] else '**misses**'}")
    pc = doc.get("per_class", {})
    if pc:
        modes = [m for m in MODES if m in pc]
        lines += ["", "Per-class IoU on target val (mean over the seeds):", "",
                  "| class | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
        for cls in next(iter(pc.values())):
            lines.append(f"| {cls} | " + " | ".join(pct(pc[m].get(cls), missing="-") for m in modes) + " |")
    return "\n".join(lines) + "\n"


def finish(doc: dict) -> dict:
    runs = doc["runs"]
    doc["summary"] = summarise(runs)
    doc["significance"] = {}
    for a, b in COMPARISONS:
        s = significance(per_metric(runs, a, "target_miou"), per_metric(runs, b, "target_miou"))
        if s:
            doc["significance"][f"{a}_minus_{b}"] = s
    doc["calibration"] = calibration(runs, doc["summary"])
    per_class: dict = {}
    for mode in doc["summary"]:
        rs = [r["per_class_iou"] for r in runs if r["mode"] == mode and r.get("per_class_iou")]
        if rs:
            per_class[mode] = {c: (sum(r[c] for r in rs) / len(rs) if all(r.get(c) is not None for r in rs) else None)
                               for c in rs[0]}
    doc["per_class"] = per_class
    return doc


def write_json(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def update_readme(readme: Path, text: str, begin: str = README_BEGIN, end: str = README_END) -> None:
    """Replace what lies between the README's result markers (``begin`` ... ``end``) with ``text``."""
    body = readme.read_text()
    if begin not in body or end not in body:
        raise SystemExit(f"{readme}: has no '{begin}' ... '{end}' markers; add them where the results belong")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, head + begin + "\n" + text + end + tail)


def report_from_json(path: str, render, readme: str | None = None, begin: str = README_BEGIN,
                     end: str = README_END) -> int:
    """``--from-json FILE [--readme README.md]`` of the bench scripts: print ``render(doc)`` of a
    JSON a run wrote and, with ``readme``, rewrite the README's section between its markers."""
    text = render(json.loads(Path(path).read_text()))
    print(text)
    if readme:
        update_readme(Path(readme), text, begin, end)
        print(f"wrote the results section of {readme}")
    return 0


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------

def evaluate(ckpt: Path, data: Path, json_path: Path, **options) -> dict:
    say(f"eval {ckpt} on {data}{''.join(f' {k}={v}' for k, v in options.items())} -> {json_path}")
    return isolated("evaluate", ckpt, data, json_path=json_path, progress=False, **options)


def run_config(mode: str, seed: int, args, data: Path, out: Path):
    """The checked training config of one run: the mode's settings, then ``--set``, ``--iters`` and
    the warm start."""
    from prnseg import api

    source_root, kind = (data / "cityscapes", "cityscapes") if mode == "oracle" else (data / "gta", None)
    uda_mode, extra = MODE_SETS.get(mode, ("source_only" if mode == "oracle" else mode, {}))
    values = {"data.source.root": source_root, "data.target.root": data / "cityscapes", "uda.mode": uda_mode,
              "train.seed": seed, "train.threads": args.threads, "train.eval_every": 0, **extra}
    if kind:      # the oracle reads the target train split with its labels, at the source's resize
        values["data.source.kind"] = kind
    cfg = api.override(api.load_config(args.config, values),
                       args.overrides + (args.adapt_overrides if mode in ADAPT_MODES else []))
    iters = args.adapt_iters if mode in ADAPT_MODES and args.adapt_iters else args.iters
    if iters:
        cfg.train.iters = iters
    if args.warm_start and mode in ADAPT_MODES:
        same_seed = out / f"seed{seed}" / "source_only" / "last.pt"
        cfg.train.init_from = str(same_seed if args.warm_start == "source_only" else Path(args.warm_start))
    return cfg


def trained(run_dir: Path, iters: int) -> dict | None:
    """The summary of a run that finished training but has no run.json (its evaluation was cut
    short, or the benchmark's val split grew since): it is evaluated, not trained again."""
    path = run_dir / "summary.json"
    if not (run_dir / "last.pt").exists() or not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("step") == iters else None


def measured(row: dict) -> dict:
    """A run's row without what it did not measure (a run evaluated without training here has no
    wall time): absent, not null, in run.json and the JSON alike."""
    return {k: v for k, v in row.items() if v is not None}


def run_one(mode: str, seed: int, args, data: Path, held_out: Path, out: Path) -> dict:
    run_dir = out / f"seed{seed}" / mode
    done = run_dir / "run.json"
    if done.exists():
        return {**measured(json.loads(done.read_text())), "mode": mode}   # the folder names the mode
    if args.collect:
        return {}
    cfg = run_config(mode, seed, args, data, out)
    summary = trained(run_dir, cfg.train.iters)
    wall = None
    if summary is None:
        resume = (run_dir / "last.pt").exists()
        t0 = time.perf_counter()
        say(f"train {mode} (config {cfg.name}, uda.mode={cfg.uda.mode}, seed {seed}, {cfg.train.iters} iterations"
            f"{', resuming' if resume else ''}) -> {run_dir}")
        isolated("train", cfg, run_dir, resume=resume)
        wall = None if resume else time.perf_counter() - t0   # a resumed run's time would be its last part's
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        say(f"{run_dir}: trained ({cfg.train.iters} iterations), not evaluated; evaluating")
    ckpt = run_dir / "last.pt"
    m = evaluate(ckpt, data / "cityscapes", run_dir / "eval.json")
    src = evaluate(ckpt, held_out / "gta", run_dir / "eval_source.json", kind="gta", split="all")
    row = {"mode": mode, "seed": seed, "iters": summary.get("step"), "target_miou": m["miou"],
           "source_val_miou": src["miou"], "step_s": summary.get("median_step_seconds"),
           "peak_rss_mb": summary.get("peak_rss_mb"), "wall_s": wall, "per_class_iou": m["per_class_iou"]}
    pl = m.get("pseudo_labels")
    if pl:
        row.update(pl_raw_miou=pl["raw"]["miou"], pl_refined_miou=pl["refined"]["miou"],
                   noise_auroc=pl["noise_detector"]["auroc"], softmax_auroc=pl["confidence_baseline"]["auroc"])
    if mode in ADAPT_MODES:
        row["teacher_miou"] = evaluate(ckpt, data / "cityscapes", run_dir / "eval_teacher.json",
                                       weights="teacher")["miou"]
    row = measured(row)
    write_json(done, row)
    return row


def parse_args(argv=None):
    from prnseg.training.data.synthetic import SYNTH_VERSION

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/adaptation")
    ap.add_argument("--data", default=None, help="synthetic benchmark root (default: OUT/data, written if missing)")
    ap.add_argument("--version", type=int, default=SYNTH_VERSION,
                    help=f"synthetic generator version (default {SYNTH_VERSION})")
    ap.add_argument("--gap", type=float, default=None, metavar="G",
                    help="appearance gap of the benchmark (prnseg synth --gap; default: 1.0 for a benchmark this "
                         "writes, whatever gap the one at --data was written with otherwise)")
    ap.add_argument("--config", default="synthetic", help="training config for every mode (default synthetic)")
    ap.add_argument("--iters", type=int, default=None, help="iterations per mode (default: the config's)")
    ap.add_argument("--seeds", default="0", help="comma list of training seeds, e.g. 0,1,2 (default 0)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma list of source_only, self_training, prn, oracle (target-trained upper bound), "
                         "self_training_mic, prn_mic (the same with masked image consistency), "
                         "prn_prior (prn with prn.noise_prior=max_softmax), prn_argmax (prn.refine_min_confidence=0), "
                         "prn_running_bn (prn with prn.pseudo_label_bn=running), prn_tta (the PRN learns the "
                         "teacher's multi-scale + mirror labels on the target: prn.refine_signal and "
                         "noise_signal=target_tta, prn.noise_prior=max_softmax), self_training_tta (the teacher's "
                         "pseudo-labels from multi-scale + mirror averaging: uda.pseudo_label_tta), self_training_la "
                         "(the pseudo-labels logit-adjusted by the teacher's running target class marginal: "
                         "uda.pseudo_label_logit_adjustment=0.25), self_training_tta_la (both), prn_la (prn on the "
                         "adjusted labels)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config overrides for every mode")
    ap.add_argument("--holdout-images", type=int, default=100, metavar="N",
                    help="held-out source images the source mIoU is measured on (default 100)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = default)")
    ap.add_argument("--warm-start", default="source_only", metavar="CKPT",
                    help="start self_training and prn from this checkpoint's student ('source_only' (default) = "
                         "the same seed's source_only result of this run, 'none' = from scratch)")
    ap.add_argument("--adapt-iters", type=int, default=None,
                    help="iterations of self_training / prn (default: --iters)")
    ap.add_argument("--adapt-set", dest="adapt_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for the adaptation modes only (after --set), e.g. "
                         "uda.pseudo_weight_mode=per_pixel: source_only and the oracle stay the runs they are")
    ap.add_argument("--val-images", type=int, default=None, metavar="N",
                    help="target val images of the benchmark (prnseg synth --val; default: 100 for a benchmark "
                         "this writes, whatever count the one at --data has otherwise)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the runs and summary here "
                    "(default OUT/adaptation.json)")
    ap.add_argument("--readme", default=None, metavar="README.md",
                    help="rewrite the README's results section (between its markers) from the JSON")
    ap.add_argument("--readme-section", default=README_SECTION, metavar="NAME",
                    help=f"the README markers' name (default {README_SECTION}; the version 3 table is "
                         f"{README_SECTION}-v3)")
    ap.add_argument("--collect", action="store_true", help="train nothing: report the runs under OUT that "
                    "finished (a run.json each) for these seeds and modes")
    ap.add_argument("--from-json", default=None, metavar="FILE",
                    help="train nothing: report (and with --readme, write) from a JSON this script wrote")
    args = ap.parse_args(argv)
    if args.warm_start == "none":
        args.warm_start = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return report_from_json(args.from_json, lambda doc: report(finish(doc)), args.readme,
                                *section_markers("bench/adaptation.py", args.readme_section))

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not seeds:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}" if unknown
                         else "--seeds: give at least one seed, e.g. 0,1,2")
    if args.warm_start == "source_only" and "source_only" not in modes and any(m in ADAPT_MODES for m in modes):
        modes.insert(0, "source_only")     # the warm start of the adaptation modes
    json_path = Path(args.json) if args.json else out / "adaptation.json"

    spec = {"seed": 0, **({"gap": args.gap} if args.gap is not None else {}),
            **({"val": args.val_images} if args.val_images is not None else {})}
    ensure_benchmark(data, spec, args.version)
    held_out = out / "source_holdout"
    ensure_benchmark(held_out, {"seed": 1, "source": args.holdout_images, "target": 1, "val": 0}, args.version)
    meta = json.loads((data / "synth.json").read_text())
    # what trains (or resumes) every run reported; --collect only gathers them
    given = argv if argv is not None else sys.argv[1:]
    command = "python bench/adaptation.py " + " ".join(shlex.quote(a) for a in given if a != "--collect")
    doc = {"benchmark": {"version": meta["version"], "sizes": meta["counts"], "image_size": meta["size"],
                         "data_seed": meta["seed"], "gap": meta.get("gap", 1.0), "config": args.config,
                         "overrides": args.overrides, "adapt_overrides": args.adapt_overrides,
                         "iters": args.iters, "adapt_iters": args.adapt_iters,
                         "warm_start": args.warm_start},
           "command": command, "runs": []}
    for seed in seeds:
        for mode in modes:
            row = run_one(mode, seed, args, data, held_out, out)
            if row:
                doc["runs"].append(row)
                write_json(json_path, finish(doc))
    doc = finish(doc)
    write_json(json_path, doc)
    text = report(doc)
    print("\n" + text)
    print(f"wrote {json_path}")
    if args.readme:
        update_readme(Path(args.readme), text, *section_markers("bench/adaptation.py", args.readme_section))
        print(f"wrote the results section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
