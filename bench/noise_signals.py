"""Which label-free per-pixel signal ranks the teacher's target errors best?

For each seed's adapted ``prn`` checkpoint of ``bench/adaptation.py`` (same ``--out``), every pixel of
the labelled target val split is scored by each signal, and the signal's AUROC at telling the
teacher's wrong labels (argmax != ground truth) from its right ones is reported, beside the
teacher's max-softmax (the baseline the PRN's noise head has to beat by 1 point, issue "A PRN that
earns its name"). Each signal's cost in forward passes of the teacher is in brackets:

- ``max_softmax``: 1 - the teacher's top probability (the baseline) [1];
- ``margin``: minus the gap between its two top probabilities; ``entropy``: of its distribution [1];
- ``prn_noise``: the PRN's noise probability (what ``prnseg label`` writes today) [1];
- ``prn_refined_softmax``: 1 - the PRN's refined probability of the teacher's label [1];
- ``flip_softmax``: 1 - the probability of the teacher's label averaged over the image and its
  mirror (test-time augmentation) [2];
- ``student_softmax``: the same averaged over teacher and student [2];
- ``flip_student_softmax``: averaged over teacher, mirrored teacher and student [3];
- ``flip_disagreement``: max-softmax plus 1 where the mirrored view's label differs [2];
- ``snapshot_softmax``: 1 - the probability of the teacher's label averaged over the teacher and the
  run's starting model (the ``source_only`` checkpoint it adapted from: the teacher "some thousand
  steps back", kept frozen beside the exported one) [2]; ``snapshot_disagreement``: max-softmax
  plus 1 where the snapshot's label differs [2];
- ``scale_flip_softmax``: the label's probability averaged over scales 0.75, 1, 1.25 and their
  mirrors (the field's multi-scale test-time augmentation) [6];
- ``prn_noise_softmax_mean``: the mean of ``prn_noise`` and ``max_softmax`` (does the PRN's mask add
  anything to confidence?) [1].

    python bench/noise_signals.py --out runs/v3 --seeds 0,1,2 --json bench/results/noise_signals_v3.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptation import mean_std, significance, write_json  # noqa: E402

SIGNALS = ("max_softmax", "margin", "entropy", "prn_noise", "prn_refined_softmax", "flip_softmax",
           "student_softmax", "flip_student_softmax", "flip_disagreement", "snapshot_softmax",
           "snapshot_disagreement", "scale_flip_softmax", "prn_noise_softmax_mean")
SCALES = (0.75, 1.25)   # beside 1.0, for scale_flip_softmax
#: labels scored by mIoU: the argmax of the teacher's single pass (raw), of its mirror average and
#: of its multi-scale + mirror average (the labels a test-time augmented teacher would write)
LABELS = ("raw", "flip", "scale_flip")


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney U; ties get average ranks)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]   # 1-based ranks, the average over each run of ties
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise SystemExit("AUROC needs both right and wrong pixels; the split has only one kind")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def image_signals(teacher, student, snapshot, prn, rgb: np.ndarray, pipes: dict, device,
                  hw) -> tuple[dict, np.ndarray]:
    """Every signal's H x W map for one image, and the teacher's label. ``pipes`` maps each test
    scale (1.0 and :data:`SCALES`) to its pipeline."""
    import torch

    from prnseg.training.evaluate import run_networks

    mirror = np.ascontiguousarray(rgb[:, ::-1])

    def probs(model, image, scale=1.0, flip=False):
        logits = run_networks(model, None, image, pipes[scale], device, hw)["logits"]
        return (logits.flip(-1) if flip else logits).softmax(0)

    t = run_networks(teacher, prn, rgb, pipes[1.0], device, hw)
    p, pf, ps, pn = t["logits"].softmax(0), probs(teacher, mirror, flip=True), probs(student, rgb), probs(snapshot, rgb)
    scaled = [probs(teacher, img, sc, flip) for sc in pipes if sc != 1.0
              for img, flip in ((rgb, False), (mirror, True))]
    pms = (p + pf + sum(scaled)) / (2 + len(scaled))
    top2 = p.topk(2, 0).values
    label = p.argmax(0)

    def of_label(q):
        return q.gather(0, label[None])[0]

    maps = {"max_softmax": 1 - top2[0], "margin": -(top2[0] - top2[1]),
            "entropy": -(p * p.clamp_min(1e-8).log()).sum(0), "prn_noise": torch.sigmoid(t["noise_logit"][0]),
            "prn_refined_softmax": 1 - of_label(t["refined_logits"].softmax(0)),
            "flip_softmax": 1 - of_label((p + pf) / 2), "student_softmax": 1 - of_label((p + ps) / 2),
            "flip_student_softmax": 1 - of_label((p + pf + ps) / 3),
            "flip_disagreement": (1 - top2[0]) + (pf.argmax(0) != label).float(),
            "snapshot_softmax": 1 - of_label((p + pn) / 2),
            "snapshot_disagreement": (1 - top2[0]) + (pn.argmax(0) != label).float(),
            "scale_flip_softmax": 1 - of_label(pms),
            "prn_noise_softmax_mean": (torch.sigmoid(t["noise_logit"][0]) + 1 - top2[0]) / 2}
    labels = {"raw": label, "flip": (p + pf).argmax(0), "scale_flip": pms.argmax(0)}
    return {k: v.float().numpy() for k, v in maps.items()}, {k: v.numpy() for k, v in labels.items()}


def seed_row(ckpt: Path, snapshot_ckpt: Path, data: Path, max_images: int, split: str = "val",
             scales=SCALES) -> dict:
    import torch

    from prnseg.training.data.builder import build_eval_dataset, val_dataset_config
    from prnseg.training.data.transforms import build_test_pipeline
    from prnseg.training.evaluate import load_models

    cfg, student, prn, teacher = load_models(ckpt, "student", "cpu", with_teacher=True)
    if prn is None:
        raise SystemExit(f"{ckpt}: has no PRN; give the --out of bench/adaptation.py's prn runs")
    if not snapshot_ckpt.exists():
        raise SystemExit(f"{snapshot_ckpt}: not found; the snapshot signals need the seed's source_only run "
                         "(bench/adaptation.py --modes source_only)")
    _, snapshot, _, _ = load_models(snapshot_ckpt, "student", "cpu")
    for m in (student, prn, teacher, snapshot):
        m.eval()
    vcfg = val_dataset_config(cfg)
    ds = build_eval_dataset(vcfg.kind, data / "cityscapes", split)
    h, w = vcfg.size
    pipes = {sc: build_test_pipeline(size=(round(h * sc), round(w * sc))) for sc in (1.0, *scales)}
    from prnseg.metrics import ConfusionMatrix

    scores = {k: [] for k in SIGNALS}
    cms = {k: ConfusionMatrix(teacher.num_classes) for k in LABELS}
    wrong = []
    n = len(ds) if max_images <= 0 else min(max_images, len(ds))
    with torch.no_grad():
        for i in range(n):
            rgb, gt = ds.load_raw(i)
            maps, labels = image_signals(teacher, student, snapshot, prn, rgb, pipes, torch.device("cpu"), gt.shape)
            valid = gt != 255
            wrong.append((labels["raw"] != gt)[valid])
            for k, lab in labels.items():
                cms[k].update(lab, gt)
            for k in SIGNALS:
                scores[k].append(maps[k][valid])
    wrong = np.concatenate(wrong)
    row = {k: auroc(np.concatenate(v), wrong) for k, v in scores.items()}
    return {**row, **{f"miou_{k}": cm.miou() for k, cm in cms.items()}, "error_rate": float(wrong.mean()),
            "n_images": n, "split": split}


def summarise(rows: dict[int, dict]) -> dict:
    keys = [*SIGNALS, *(f"miou_{k}" for k in LABELS if all(f"miou_{k}" in r for r in rows.values()))]
    summary = {k: mean_std([r[k] for r in rows.values()]) for k in keys}
    vs = {k: significance({s: r[k] for s, r in rows.items()}, {s: r["max_softmax"] for s, r in rows.items()})
          for k in SIGNALS if k != "max_softmax"}
    labels = {k: significance({s: r[k] for s, r in rows.items()}, {s: r["miou_raw"] for s, r in rows.items()})
              for k in keys if k.startswith("miou_") and k != "miou_raw"}
    return {"summary": summary, "vs_max_softmax": vs, "labels_vs_raw": labels}


def report(doc: dict) -> str:
    lines = ["| signal | AUROC (mean ± std) | minus max-softmax | verdict |", "|---|---|---|---|"]
    for k in SIGNALS:
        m = doc["summary"][k]
        d = doc["vs_max_softmax"].get(k)
        diff = f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}" if d else ""
        lines.append(f"| {k} | {100 * m['mean']:.2f} ± {100 * m['std']:.2f} | {diff} | {d['verdict'] if d else ''} |")
    if doc.get("labels_vs_raw"):
        lines += ["", "| labels | mIoU (mean ± std) | minus raw | verdict |", "|---|---|---|---|"]
        for k in LABELS:
            m, d = doc["summary"][f"miou_{k}"], doc["labels_vs_raw"].get(f"miou_{k}")
            diff = f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}" if d else ""
            lines.append(f"| {k} | {100 * m['mean']:.2f} ± {100 * m['std']:.2f} | {diff} | "
                         f"{d['verdict'] if d else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/adaptation", help="the --out of bench/adaptation.py (seed<S>/prn)")
    ap.add_argument("--data", default=None, help="synthetic benchmark root (default OUT/data)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--mode", default="prn", help="which run of each seed (default prn)")
    ap.add_argument("--split", default="val", help="target split scored (val, or train: the images the "
                    "pseudo-labels are written for)")
    ap.add_argument("--max-images", type=int, default=0, help="0 = the whole split")
    ap.add_argument("--scales", default=",".join(map(str, SCALES)),
                    help="scales beside 1 that scale_flip_softmax averages, with their mirrors (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    rows = {}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        rows[seed] = seed_row(out / f"seed{seed}" / args.mode / "last.pt",
                              out / f"seed{seed}" / "source_only" / "last.pt", data, args.max_images, args.split,
                              tuple(float(x) for x in args.scales.split(",") if x.strip()))
        keys = (*SIGNALS, *(f"miou_{x}" for x in LABELS))
        print(f"seed {seed}: " + ", ".join(f"{k} {100 * rows[seed][k]:.2f}" for k in keys), flush=True)
    doc = {"out": str(out), "mode": args.mode, "split": args.split, "scales": args.scales,
           "runs": {str(s): r for s, r in rows.items()},
           **summarise(rows)}
    print("\n" + report(doc))
    if args.json:
        write_json(Path(args.json), doc)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
