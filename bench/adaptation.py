"""Adaptation benchmark on the built-in synthetic benchmark.

Trains ``source_only``, ``self_training`` and ``prn`` from the same seed (each a real
``prnseg train`` process), evaluates each on the target val split with ``prnseg eval`` and
prints one table: target val mIoU; raw vs refined pseudo-label mIoU; noise-mask precision,
recall and AUROC next to the max-softmax confidence baseline; median step time, the
``prn / self_training`` step-time ratio and each mode's peak memory, all measured in this run.

    python bench/adaptation.py --out runs/adaptation            # synthesizes data if needed
    python bench/adaptation.py --out runs/adaptation --iters 500  # quicker, weaker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = ("source_only", "self_training", "prn")
# "oracle" is source_only trained on the target train labels: the upper end of the gap.


def sh(args: list[str]) -> None:
    print("$ prnseg " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "prnseg", *args], check=True)


def ensure_benchmark(root: Path, synth_args: list[str]) -> None:
    """Write the synthetic benchmark at ``root`` unless a complete one of this generator version is there.

    A benchmark from another generator version (or an interrupted one) is written again: its
    numbers would not be comparable with this version's.
    """
    from prnseg.training.data.synthetic import SYNTH_VERSION

    marker = root / "synth.json"
    if not marker.exists():
        sh(["synth", str(root), *synth_args])
        return
    try:
        meta = json.loads(marker.read_text())
    except ValueError:
        meta = {}
    if meta.get("version") == SYNTH_VERSION and meta.get("complete"):
        return
    print(f"{root}: not a complete benchmark of generator version {SYNTH_VERSION} "
          f"(found version {meta.get('version')}, complete={meta.get('complete')}); writing it again", flush=True)
    sh(["synth", str(root), *synth_args, "--overwrite"])


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/adaptation")
    ap.add_argument("--data", default=None, help="synthetic benchmark root (default: OUT/data, written if missing)")
    ap.add_argument("--iters", type=int, default=None, help="iterations per mode (default: the synthetic config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma list of source_only, self_training, prn, oracle (target-trained upper bound)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides for every mode")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = default)")
    ap.add_argument("--warm-start", default=None, metavar="CKPT",
                    help="start self_training and prn from this checkpoint's student (e.g. a source_only run's "
                         "last.pt; 'source_only' = this run's own source_only result)")
    ap.add_argument("--adapt-iters", type=int, default=None,
                    help="iterations of self_training / prn (default: --iters)")
    args = ap.parse_args()

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    ensure_benchmark(data, ["--seed", str(args.seed)])
    results = {}
    for mode in args.modes.split(","):
        run_dir = out / mode
        sets = [f"data.source.root={data / 'gta'}", f"data.target.root={data / 'cityscapes'}",
                f"uda.mode={mode}", f"train.seed={args.seed}", f"train.threads={args.threads}",
                "train.eval_every=0", *args.overrides]
        if mode == "oracle":
            sets[0] = f"data.source.root={data / 'cityscapes'}"
            sets[2] = "uda.mode=source_only"
            sets += ["data.source.kind=cityscapes", "data.source.resize=[512,256]"]
        iters = args.adapt_iters if mode in ("self_training", "prn") and args.adapt_iters else args.iters
        if iters:
            sets.append(f"train.iters={iters}")
        if args.warm_start and mode in ("self_training", "prn"):
            ckpt = out / "source_only" / "last.pt" if args.warm_start == "source_only" else Path(args.warm_start)
            sets.append(f"train.init_from={ckpt}")
        train = ["train", "--config", "synthetic", "--out", str(run_dir), *[a for s in sets for a in ("--set", s)]]
        if (run_dir / "last.pt").exists():
            train.append("--resume")
        t0 = time.perf_counter()
        sh(train)
        wall = time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.setdefault("wall_seconds", wall)
        sh(["eval", str(run_dir / "last.pt"), "--data", str(data / "cityscapes"), "--json", str(run_dir / "eval.json")])
        metrics = json.loads((run_dir / "eval.json").read_text())
        if mode == "self_training":
            sh(["eval", str(run_dir / "last.pt"), "--data", str(data / "cityscapes"), "--weights", "teacher",
                "--json", str(run_dir / "eval_teacher.json")])
            metrics["teacher_miou"] = json.loads((run_dir / "eval_teacher.json").read_text())["miou"]
        if mode == "source_only":
            # the same model on unseen source-style images: how well the source itself is learnt
            held_out = out / "source_holdout"
            ensure_benchmark(held_out, ["--seed", str(args.seed + 1), "--source", "100", "--target", "1", "--val", "0"])
            sh(["eval", str(run_dir / "last.pt"), "--data", str(held_out / "gta"), "--kind", "gta", "--split", "all",
                "--json", str(run_dir / "eval_source.json")])
            metrics["source_holdout_miou"] = json.loads((run_dir / "eval_source.json").read_text())["miou"]
        results[mode] = {"summary": summary, "metrics": metrics}

    lines = ["| mode | target val mIoU | pseudo-labels raw -> refined mIoU | noise mask P / R / AUROC | "
             "max-softmax baseline AUROC | median step (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        m, s = r["metrics"], r["summary"]
        pl = m.get("pseudo_labels")
        if pl:
            nd, cb = pl["noise_detector"], pl["confidence_baseline"]
            plq = f"{pct(pl['raw']['miou'])} -> {pct(pl['refined']['miou'])}"
            noise = f"{pct(nd['precision'])} / {pct(nd['recall'])} / {pct(nd['auroc'])}"
            base = pct(cb["auroc"])
        else:
            plq = f"{pct(m['teacher_miou'])} (teacher)" if "teacher_miou" in m else "-"
            noise = base = "-"
        lines.append(f"| {mode} | {pct(m['miou'])} | {plq} | {noise} | {base} | "
                     f"{s['median_step_seconds']:.3f} | {s['peak_rss_mb']:.0f} |")
    if "source_holdout_miou" in results.get("source_only", {}).get("metrics", {}):
        lines.append(f"\nsource_only on held-out source images: {pct(results['source_only']['metrics']['source_holdout_miou'])} mIoU")
    table = "\n".join(lines)
    print("\n" + table)
    if "prn" in results and "self_training" in results:
        ratio = results["prn"]["summary"]["median_step_seconds"] / results["self_training"]["summary"]["median_step_seconds"]
        print(f"\nstep-time ratio prn / self_training: {ratio:.2f} (target <= 1.35)")
        results["step_time_ratio_prn_over_self_training"] = ratio
    if "prn" in results and "source_only" in results:
        gain = results["prn"]["metrics"]["miou"] - results["source_only"]["metrics"]["miou"]
        print(f"prn - source_only: {100 * gain:+.1f} mIoU (target >= +10)")
    if "prn" in results and "self_training" in results:
        gain = results["prn"]["metrics"]["miou"] - results["self_training"]["metrics"]["miou"]
        print(f"prn - self_training: {100 * gain:+.1f} mIoU (target >= +1)")
    (out / "adaptation.json").write_text(json.dumps(results, indent=2))
    (out / "adaptation.md").write_text(table + "\n")
    print(f"\nwrote {out / 'adaptation.json'} and {out / 'adaptation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
