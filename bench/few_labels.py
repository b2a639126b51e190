"""Few-label refinement on the synthetic benchmark: the gain of K hand-labelled target images,
chosen by ``prnseg label --suggest`` or at random.

The loop a user runs, with the synthetic ground truth standing in for the person who labels:
per seed, the ``prn`` run of ``bench/adaptation.py`` (same --out) is exported and labels the target
train images with ``--suggest``; then for each K a ``prn`` run adapts from the seed's ``source_only``
checkpoint (as the adaptation table's runs do) with the K chosen (or K random) images as
``data.target_labeled``, and is evaluated on target val: the student's mIoU and the written
pseudo-labels' mIoU against the teacher's raw ones. K = 0 is the adaptation table's ``prn`` run.

    python bench/adaptation.py --out runs/v3 --seeds 0,1,2 --modes source_only,self_training,prn \\
        --adapt-iters 1000 --threads 1
    python bench/few_labels.py --out runs/v3 --seeds 0,1,2 --k 10 --threads 1

Every run writes ``OUT/few_labels/seed<S>/<strategy>_k<K>/run.json`` when it ends, so an
interrupted table resumes; ``--json`` holds all runs and the summary (mean ± std over seeds, the
significance rule of ``bench/adaptation.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import (evaluate, isolated, mean_std, measured, report_from_json, say,  # noqa: E402
                        section_markers, significance, update_readme, write_json)

#: strategy -> (where its K images come from, the share of them kept from the student for the PRN
#: alone: data.target_labeled.prn_fraction). suggest_split gives the PRN half, so it learns from
#: images its teacher never fits; suggest_prn / random_prn give it all of them, so the labels reach
#: the student only through the PRN's refined pseudo-labels (the method's own route)
STRATEGIES = {"suggest": ("suggest", 0.0), "random": ("random", 0.0), "suggest_split": ("suggest", 0.5),
              "suggest_prn": ("suggest", 1.0), "random_prn": ("random", 1.0)}
DEFAULT_STRATEGIES = ("suggest", "random")
STRATEGY_OVERRIDES = {s: {"data.target_labeled.prn_fraction": f} for s, (_, f) in STRATEGIES.items() if f}
#: the routes whose labels teach the PRN alone: their noise mask is judged against max-softmax
PRN_ALONE = tuple(s for s, (_, f) in STRATEGIES.items() if f == 1.0)
METRICS = ("target_miou", "pl_raw_miou", "pl_written_miou", "pl_prn_argmax_miou", "noise_auroc", "softmax_auroc",
           "wall_s")
#: the PRN's own argmax wherever it differs (prn.refine_min_confidence 0), scored beside the written
#: labels: whether a PRN that learnt from K human labels refines better than the rule lets it
ARGMAX_SWEEP = (0.0,)
README_SECTION = "few-label-results"


def readme_markers(section: str = README_SECTION) -> tuple[str, str]:
    return section_markers("bench/few_labels.py", section)


README_BEGIN, README_END = readme_markers()


def target_images(data: Path) -> list[str]:
    """Target train images, relative to the folder ``prnseg label`` is given (as suggest.txt lists them)."""
    root = data / "cityscapes" / "leftImg8bit" / "train"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def suggested(seed: int, k_max: int, args, data: Path, out: Path) -> list[str]:
    """The seed's ranked queue of ``k_max`` images, from its adapted ``prn`` model."""
    base = out / "few_labels" / f"seed{seed}"
    queue = base / "label" / "suggest" / "suggest.txt"
    if queue.exists() and len(queue.read_text().splitlines()) >= k_max:
        return queue.read_text().splitlines()
    ckpt = out / f"seed{seed}" / "prn" / "last.pt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt}: not found; run bench/adaptation.py --out {out} --seeds {seed} --modes prn first")
    from prnseg import api

    model = base / "model"
    if not (model / "model.json").exists():
        say(f"export {ckpt} -> {model}")
        isolated("export", ckpt, model, overwrite=True, progress=False)
    images = data / "cityscapes" / "leftImg8bit" / "train"
    say(f"label {images} with {model}, suggest {k_max} -> {base / 'label'}")
    report = api.label(api.LabelOptions(input_dir=images, out_dir=base / "label", model_dir=model,
                                        workers=min(4, os.cpu_count() or 1), save=("noise_prob", "raw"),
                                        progress=False), suggest=k_max)
    if report["counts"]["failed"]:
        raise SystemExit(f"{base / 'label'}: {report['counts']['failed']} images failed to label (see its "
                         "failures.jsonl); fix the cause and run again")
    return queue.read_text().splitlines()


def needs_queue(strategies: list[str]) -> bool:
    """Whether a strategy takes the images from the ``--suggest`` queue."""
    return any(STRATEGIES[s][0] == "suggest" for s in strategies)


def chosen(strategy: str, seed: int, k: int, queue: list[str], images: list[str]) -> list[str]:
    """The queue's first K, or K images drawn from (seed, K) alone: random and random_prn get the same."""
    if STRATEGIES[strategy][0] == "suggest":
        return queue[:k]
    return sorted(random.Random(1000 * seed + k).sample(images, k))


def run_one(seed: int, k: int, strategy: str, listed: list[str], args, data: Path, out: Path) -> dict:
    run_dir = out / "few_labels" / f"seed{seed}" / f"{strategy}_k{k}"
    done = run_dir / "run.json"
    if done.exists():
        return json.loads(done.read_text())
    if args.collect:
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    lst = run_dir / "labelled.txt"
    lst.write_text("".join(f"{p}\n" for p in listed))
    from prnseg import api

    cfg = api.override(api.load_config(args.config, {
        "data.source.root": data / "gta", "data.target.root": data / "cityscapes", "uda.mode": "prn",
        "train.seed": seed, "train.threads": args.threads, "train.eval_every": 0, "train.iters": args.adapt_iters,
        "train.init_from": out / f"seed{seed}" / "source_only" / "last.pt",
        "data.target_labeled.root": data / "cityscapes", "data.target_labeled.list": lst,
        **STRATEGY_OVERRIDES.get(strategy, {})}), args.overrides)
    resume = (run_dir / "last.pt").exists()
    t0 = time.perf_counter()
    say(f"train prn with {k} labelled target images ({strategy}, seed {seed}{', resuming' if resume else ''}) "
        f"-> {run_dir}")
    isolated("train", cfg, run_dir, resume=resume)   # a fresh interpreter per run, as adaptation.py's runs
    wall = None if resume else time.perf_counter() - t0   # a resumed run's time would be its last part's
    evaluate(run_dir / "last.pt", data / "cityscapes", run_dir / "eval.json", refine_sweep=ARGMAX_SWEEP)
    return write_row(done, eval_row(run_dir / "eval.json", seed, k, strategy, wall))


def eval_row(eval_json: Path, seed: int, k: int, strategy: str, wall: float | None) -> dict:
    m = json.loads(eval_json.read_text())
    pl = m["pseudo_labels"]
    return {"seed": seed, "k": k, "strategy": strategy, "target_miou": m["miou"], "pl_raw_miou": pl["raw"]["miou"],
            "pl_written_miou": pl["refined"]["miou"],
            "pl_prn_argmax_miou": pl.get("written_at", {}).get("0", {}).get("miou"),
            "noise_auroc": pl["noise_detector"]["auroc"],
            "softmax_auroc": pl["confidence_baseline"]["auroc"], "wall_s": wall}


def write_row(path: Path, row: dict) -> dict:
    row = measured(row)
    write_json(path, row)
    return row


def summarise(doc: dict) -> dict:
    """Mean ± std per (strategy, K); chosen vs random and each vs self_training / K=0, per seed."""
    runs = doc["runs"]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r['strategy']}_k{r['k']}", []).append(r)
    doc["summary"] = {g: {m: mean_std([r[m] for r in rs]) for m in METRICS if all(r.get(m) is not None for r in rs)}
                      for g, rs in groups.items()}

    def by_seed(group: str, metric: str) -> dict[int, float]:
        return {r["seed"]: r[metric] for r in groups.get(group, []) if r.get(metric) is not None}

    sig = {}
    for k in sorted({r["k"] for r in runs if r["k"] > 0}):
        for metric in ("target_miou", "pl_written_miou"):
            pairs = {f"suggest_k{k}_minus_random_k{k}": (f"suggest_k{k}", f"random_k{k}"),
                     f"suggest_k{k}_minus_prn_k0": (f"suggest_k{k}", "prn_k0"),
                     f"suggest_split_k{k}_minus_suggest_k{k}": (f"suggest_split_k{k}", f"suggest_k{k}"),
                     f"suggest_prn_k{k}_minus_random_prn_k{k}": (f"suggest_prn_k{k}", f"random_prn_k{k}"),
                     f"suggest_prn_k{k}_minus_suggest_k{k}": (f"suggest_prn_k{k}", f"suggest_k{k}")}
            for name, (a, b) in pairs.items():
                s = significance(by_seed(a, metric), by_seed(b, metric))
                if s:
                    sig[f"{name}:{metric}"] = s
        st = {r["seed"]: r["target_miou"] for r in doc.get("self_training", [])}
        for strategy in ("suggest", "suggest_prn"):
            s = significance(by_seed(f"{strategy}_k{k}", "target_miou"), st)
            if s:
                sig[f"{strategy}_k{k}_minus_self_training:target_miou"] = s
        for strategy in ("suggest", "suggest_split", "suggest_prn", "random_prn"):
            raw = by_seed(f"{strategy}_k{k}", "pl_raw_miou")
            for labels in ("written", "prn_argmax"):
                s = significance(by_seed(f"{strategy}_k{k}", f"pl_{labels}_miou"), raw)
                if s:
                    sig[f"{strategy}_k{k}_{labels}_minus_raw:pl_miou"] = s
        for strategy in PRN_ALONE:
            s = significance(by_seed(f"{strategy}_k{k}", "noise_auroc"), by_seed(f"{strategy}_k{k}", "softmax_auroc"))
            if s:
                sig[f"{strategy}_k{k}_noise_mask_minus_max_softmax:auroc"] = s
    doc["significance"] = sig
    return doc


def _ms(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{100 * s['mean']:.1f}" if s["n"] == 1 else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def report(doc: dict) -> str:
    lines = ["Few-label refinement (`data.target_labeled`), synthetic benchmark version "
             f"{doc['benchmark']['version']}, seeds {', '.join(map(str, doc['benchmark']['seeds']))}; "
             "mean ± std over the seeds each row has. Produced by:", "", "```bash", doc["command"], "```", "",
             "| labelled images | chosen by | seeds | student target val mIoU | pseudo-labels raw -> written | "
             "noise AUROC (max-softmax) | wall per run (min) |", "|---|---|---|---|---|---|---|"]
    for group, s in sorted(doc["summary"].items(), key=lambda kv: (int(kv[0].rsplit("_k", 1)[1]), kv[0])):
        strategy, k = group.rsplit("_k", 1)
        rs = [r for r in doc["runs"] if f"{r['strategy']}_k{r['k']}" == group]
        # in the seeds' order; "-" for a run without one (resumed, so only its last part was timed)
        walls = ", ".join(f"{r['wall_s'] / 60:.1f}" if r.get("wall_s") else "-" for r in rs) \
            if any(r.get("wall_s") for r in rs) else "-"
        argmax = f" (PRN argmax {_ms(s['pl_prn_argmax_miou'])})" if s.get("pl_prn_argmax_miou") else ""
        lines.append(f"| {k} | {'-' if k == '0' else strategy} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{_ms(s.get('target_miou'))} | {_ms(s.get('pl_raw_miou'))} -> "
                     f"{_ms(s.get('pl_written_miou'))}{argmax} | "
                     f"{_ms(s.get('noise_auroc'))} ({_ms(s.get('softmax_auroc'))}) | {walls} |")
    st = [r["target_miou"] for r in doc.get("self_training", [])]
    if st:
        lines += ["", f"self_training (no labels) on the same seeds: {_ms(mean_std(st))}."]
    if doc.get("significance"):
        lines += ["", "Differences (per-seed; a gain or loss only when the mean exceeds twice the std):", ""]
        for name, s in doc["significance"].items():
            diffs = ", ".join(f"{100 * d:+.1f}" for d in s["differences"])
            lines.append(f"- {name.replace('_minus_', ' - ')}: {100 * s['mean']:+.1f} ± {100 * s['std']:.1f} "
                         f"({diffs}): **{s['verdict']}**")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/adaptation", help="the --out of bench/adaptation.py (its seed<S>/prn "
                    "and seed<S>/source_only runs are used)")
    ap.add_argument("--data", default=None, help="synthetic benchmark root (default OUT/data)")
    ap.add_argument("--config", default="synthetic")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--k", default="10", help="comma list of labelled-image counts, e.g. 5,10,25,50 (default 10)")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                    help="suggest (prnseg label --suggest), random, suggest_split (suggest, half of the images for "
                         "the PRN alone: data.target_labeled.prn_fraction=0.5), suggest_prn and random_prn (all "
                         "of them for the PRN alone: prn_fraction=1)")
    ap.add_argument("--adapt-iters", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", default=None, metavar="FILE", help="default OUT/few_labels.json")
    ap.add_argument("--readme", default=None, metavar="README.md")
    ap.add_argument("--readme-section", default=README_SECTION, metavar="NAME",
                    help=f"the README markers' name (default {README_SECTION})")
    ap.add_argument("--collect", action="store_true", help="train nothing: report the runs under OUT that finished "
                    "(a run.json each) for these seeds, counts and strategies")
    ap.add_argument("--from-json", default=None, metavar="FILE", help="train nothing: report from this JSON")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return report_from_json(args.from_json, lambda doc: report(summarise(doc)), args.readme,
                                *readme_markers(args.readme_section))
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    ks = sorted(int(k) for k in args.k.split(",") if k.strip())
    strategies = [s for s in args.strategies.split(",") if s]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not ks or min(ks) < 1:
        raise SystemExit(f"--strategies: choose from {', '.join(STRATEGIES)}" if bad else "--k: counts >= 1, e.g. 5,10")
    meta = json.loads((data / "synth.json").read_text())
    # what trains (or resumes) every run reported; --collect only gathers them
    given = argv if argv is not None else sys.argv[1:]
    command = "python bench/few_labels.py " + " ".join(shlex.quote(a) for a in given if a != "--collect")
    doc = {"benchmark": {"version": meta["version"], "seeds": seeds, "config": args.config,
                         "adapt_iters": args.adapt_iters, "overrides": args.overrides},
           "command": command, "runs": [], "self_training": []}
    json_path = Path(args.json) if args.json else out / "few_labels.json"
    images = target_images(data)
    if not args.collect and max(ks) > len(images):
        raise SystemExit(f"--k {max(ks)}: the target train split of {data} has {len(images)} images")
    for seed in seeds:
        for mode, key in (("prn", "runs"), ("self_training", "self_training")):
            ev = out / f"seed{seed}" / mode / "eval.json"
            if ev.exists():
                row = eval_row(ev, seed, 0, "prn", None) if mode == "prn" else \
                    {"seed": seed, "target_miou": json.loads(ev.read_text())["miou"]}
                doc[key].append(row)
        queue = suggested(seed, max(ks), args, data, out) if needs_queue(strategies) and not args.collect else []
        for k in ks:
            for strategy in strategies:
                picked = [] if args.collect else chosen(strategy, seed, k, queue, images)
                row = run_one(seed, k, strategy, picked, args, data, out)
                if row:
                    doc["runs"].append(row)
                    write_json(json_path, summarise(doc))
    text = report(summarise(doc))
    write_json(json_path, doc)
    print("\n" + text + f"\nwrote {json_path}")
    if args.readme:
        update_readme(Path(args.readme), text, *readme_markers(args.readme_section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
