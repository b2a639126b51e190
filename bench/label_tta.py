"""What ``prnseg label --tta`` writes, against what ``prnseg label`` writes, on the target train split.

For each seed's adapted ``prn`` run of ``bench/adaptation.py`` (same ``--out``), its exported model
(``OUT/few_labels/seed<S>/model``, exported here when missing) labels the synthetic benchmark's
target *train* images twice with ``--gt`` scoring, through the shipped runtime and pipeline:

- ``plain``: the fused graph as ``prnseg export`` writes it by default: the PRN's labels under the
  pseudo-label rule, and ``1 -`` their confidence as the noise mask (``--noise-from confidence``);
- ``prn_mask``: the same labels with the PRN's noise head as the mask (``--noise-from prn``,
  exported to ``.../model_prn_mask``);
- ``tta``: ``--tta --logit-adjust 0``: the teacher's labels averaged over scales 0.75/1/1.25 and
  mirrors, and ``1 -`` their top probability as the noise probability (threshold 0.5);
- ``tta_la``: ``--tta`` as it ships: the same, with the labels logit-adjusted by the class prior
  the model recorded in training (tau 0.25; needs a checkpoint that records one, so not the
  version-3 runs trained before it was; ``--mode prn_la`` or ``self_training_la`` are).

``--mode`` picks the adaptation run (default ``prn``); models of other modes are exported to
``OUT/label_tta/seed<S>_<mode>/model``.

Both runs share the raw labels (the teacher's single pass), so every row reads against the same
raw mIoU: the written labels' mIoU, the mIoU of the pixels the mask keeps and their share, and the
mask's AUROC at ranking the raw labels' errors. The per-seed differences get the significance rule
of ``bench/adaptation.py``.

    python bench/label_tta.py --out runs/v3 --seeds 0,1,2 --json bench/results/label_tta_v3.json
    python bench/label_tta.py --from-json bench/results/label_tta_v3.json --readme README.md
    python bench/label_tta.py --from-json bench/results/label_tta_v3_st_la.json --readme README.md \
        --readme-section label-tta-la-results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import (isolated, mean_std, report_from_json, say, section_markers,  # noqa: E402
                        significance, update_readme, write_json)

#: the README section a run's table goes to: its markers are "<!-- SECTION:begin ..." and "<!-- SECTION:end -->"
README_SECTION = "label-tta-results"


def readme_markers(section: str = README_SECTION) -> tuple[str, str]:
    return section_markers("bench/label_tta.py", section)


VARIANTS = ("plain", "prn_mask", "tta", "tta_la")
#: variant -> prnseg export's noise_from for its model (the tta variants use the default export's segmenter)
NOISE_FROM = {"prn_mask": "prn"}
METRICS = ("raw_miou", "written_miou", "kept_miou", "kept_coverage", "noise_auroc", "noise_precision",
           "noise_recall", "seconds")


def model_dir(out: Path, seed: int, mode: str, variant: str) -> Path:
    """Where a variant's exported model is: the few-label loop's export for ``prn`` (shared with
    bench/few_labels.py), else one under ``OUT/label_tta``; ``prn_mask`` gets its own."""
    base = (out / "few_labels" / f"seed{seed}" / "model" if mode == "prn"
            else out / "label_tta" / f"seed{seed}_{mode}" / "model")
    return base.with_name(f"{base.name}_{variant}") if variant in NOISE_FROM else base


def run_label(model: Path, images: Path, gt: Path, out: Path, tta: bool, logit_adjustment: float | None = None) -> dict:
    from prnseg import api

    report = out / "report.json"
    if not report.exists() or json.loads(report.read_text())["counts"]["remaining"]:
        say(f"label {images} with {model}{' --tta' if tta else ''} -> {out}")
        api.label(api.LabelOptions(input_dir=images, out_dir=out, model_dir=model, gt_dir=gt, tta=tta,
                                   logit_adjustment=logit_adjustment, workers=min(2, os.cpu_count() or 1), save=(),
                                   progress=False))
    rep = json.loads(report.read_text())
    g = rep["gt"]
    return {"raw_miou": g["raw"]["miou"], "written_miou": g["refined"]["miou"], "kept_miou": g["kept"]["miou"],
            "kept_coverage": g["kept"]["coverage"], "noise_auroc": g["noise_detector"]["auroc"],
            "noise_precision": g["noise_detector"]["precision"], "noise_recall": g["noise_detector"]["recall"],
            "seconds": rep["run"].get("wall_s"), "n_images": g["n_images"],
            "logit_adjustment": rep["options"].get("logit_adjustment", 0.0),
            "noise_source": "tta" if tta else json.loads((model / "model.json").read_text())["noise"]["source"]}


def summarise(rows: dict[str, dict[int, dict]]) -> dict:
    summary = {variant: {m: mean_std([r[m] for r in runs.values()]) for m in METRICS
                         if all(r.get(m) is not None for r in runs.values())} for variant, runs in rows.items()}
    sig = {}
    for variant, runs in rows.items():
        for metric, base in (("written_miou", "raw_miou"), ("kept_miou", "written_miou")):
            s = significance({k: r[metric] for k, r in runs.items()}, {k: r[base] for k, r in runs.items()})
            if s:
                sig[f"{variant}:{metric}_minus_{base}"] = s
    for a, b in (("tta", "plain"), ("tta_la", "plain"), ("tta_la", "tta"), ("plain", "prn_mask"),
                 ("tta_la", "prn_mask")):
        if a not in rows or b not in rows:
            continue
        for metric in ("written_miou", "noise_auroc"):
            s = significance({k: r[metric] for k, r in rows[a].items()}, {k: r[metric] for k, r in rows[b].items()})
            if s:
                sig[f"{a}_minus_{b}:{metric}"] = s
    return {"summary": summary, "significance": sig}


def report(doc: dict) -> str:
    def ms(s):
        return "-" if not s else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"

    lines = ["| labels written by | raw mIoU | written mIoU | kept pixels: mIoU (share) | noise AUROC |",
             "|---|---|---|---|---|"]
    for variant, s in doc["summary"].items():
        lines.append(f"| {variant} | {ms(s.get('raw_miou'))} | {ms(s.get('written_miou'))} | "
                     f"{ms(s.get('kept_miou'))} ({ms(s.get('kept_coverage'))}) | {ms(s.get('noise_auroc'))} |")
    lines += ["", "Differences (per seed; a gain or loss only when the mean exceeds twice the std):", ""]
    for name, s in doc["significance"].items():
        diffs = ", ".join(f"{100 * d:+.2f}" for d in s["differences"])
        lines.append(f"- {name}: {100 * s['mean']:+.2f} ± {100 * s['std']:.2f} ({diffs}): **{s['verdict']}**")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/adaptation", help="the --out of bench/adaptation.py (seed<S>/prn)")
    ap.add_argument("--data", default=None, help="synthetic benchmark root (default OUT/data)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--mode", default="prn", help="which adaptation run of each seed is exported (default prn)")
    ap.add_argument("--variants", default="plain,tta",
                    help="comma list of plain, prn_mask, tta, tta_la (default plain,tta)")
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--readme", default=None, metavar="README.md", help="rewrite the README's section between its "
                    "label-tta-results markers")
    ap.add_argument("--readme-section", default=README_SECTION, metavar="NAME",
                    help=f"the README markers' name (default {README_SECTION})")
    ap.add_argument("--from-json", default=None, metavar="FILE", help="label nothing: report from this JSON")
    args = ap.parse_args(argv)
    if args.from_json:
        return report_from_json(args.from_json, report, args.readme, *readme_markers(args.readme_section))
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    cs = data / "cityscapes"
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"--variants: {', '.join(VARIANTS)}")
    rows: dict[str, dict[int, dict]] = {v: {} for v in variants}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        tag = "" if args.mode == "prn" else f"_{args.mode}"
        for v in variants:
            model = model_dir(out, seed, args.mode, v)
            if not (model / "model.json").exists():
                ckpt = out / f"seed{seed}" / args.mode / "last.pt"
                if not ckpt.exists():
                    raise SystemExit(f"{ckpt}: not found; run bench/adaptation.py --out {out} --seeds {seed} "
                                     f"--modes {args.mode}")
                say(f"export {ckpt} -> {model}")
                isolated("export", ckpt, model, overwrite=True, progress=False,
                         **({"noise_from": NOISE_FROM[v]} if v in NOISE_FROM else {}))
            if v == "tta_la" and json.loads((model / "model.json").read_text()).get("class_prior") is None:
                raise SystemExit(f"{model}: records no class_prior (trained before the trainer kept one); variant "
                                 "tta_la needs a newer run, e.g. --mode prn_la")
            rows[v][seed] = run_label(model, cs / "leftImg8bit" / "train", cs / "gtFine" / "train",
                                      out / "label_tta" / f"seed{seed}{tag}_{v}", v.startswith("tta"),
                                      0.0 if v == "tta" else None)
            print(f"seed {seed} {v}: " + ", ".join(f"{m} {rows[v][seed][m]:.4f}" for m in METRICS
                                                   if rows[v][seed].get(m) is not None), flush=True)
    doc = {"out": str(out), "mode": args.mode, "split": "train",
           "runs": {v: {str(s): r for s, r in rs.items()} for v, rs in rows.items()},
           **summarise(rows)}
    print("\n" + report(doc))
    if args.json:
        write_json(Path(args.json), doc)
        print(f"wrote {args.json}")
    if args.readme:
        update_readme(Path(args.readme), report(doc), *readme_markers(args.readme_section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
