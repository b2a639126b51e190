"""``prnseg quickstart``: the product's main job end to end on the built-in synthetic benchmark.

synth -> source-only warm-up -> PRN adaptation -> eval (before / after) -> export (parity gate)
-> ``prnseg label`` on the target train folder with its labels as ``--gt`` -> a report.
With ``--labels K`` the few-label loop follows the labelling: ``--suggest K`` picks the images
worth a person's time, the synthetic ground truth of those K stands in for that person, a second
adaptation learns from them (``data.target_labeled``) and the report gives the gain.

Every stage calls the :mod:`prnseg.api` function its own ``prnseg MODE`` calls, with a typed config
or options object (never CLI strings), and leaves a marker when it is complete, so Ctrl-C (or a
crash) followed by the same command resumes: a finished stage is skipped, training continues from
its last checkpoint, labelling skips finished images. The plan
(image counts, iterations) is fixed in ``OUT/quickstart.json`` on the first run so a resumed run
trains exactly what the first one planned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prnseg.devices import resolve_device
from prnseg.errors import PrnsegError
from prnseg.extras import require

DEFAULT_OUT = "prnseg-quickstart"
PLAN_FILE = "quickstart.json"
REPORT_FILE = "report.json"

# Seconds per training step of the synthetic config's tiny model (128x128 crops) on a 2-core CPU,
# one thread per run with two runs sharing the cores (measured; see README Results): the budget is
# split using these. A step with labelled target images costs ~1.55x a prn step (their teacher and
# student passes; measured on version 3).
CPU_STEP_SECONDS = {"source_only": 0.06, "prn": 0.21, "prn_labels": 0.33}
# Share of the budget left to everything but training (synth, eval, export, labelling).
FIXED_SECONDS_CPU = 90.0


@dataclass
class Plan:
    device: str
    budget_minutes: float
    n_source: int
    n_target: int
    n_val: int
    size_hw: tuple[int, int]        # the synthesized files
    source_only_iters: int
    prn_iters: int
    prn_start_iter: int
    label_batch: int
    crop: int = 128
    checkpoint_every: int = 50
    train_hw: tuple[int, int] | None = None     # what training resizes them to (None: size_hw)
    # The PRN's refine head lowers pseudo-label mIoU on this benchmark (README, Results), so the
    # quickstart trains on the teacher's labels under the PRN's noise mask; --refine-labels
    # runs the full method instead.
    use_refined_labels: bool = False
    tiny: bool = False
    labels: int = 0   # --labels K: the few-label loop's K (0: no loop)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where data, runs, the exported model and labels go (default {DEFAULT_OUT})")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="wall-clock budget used to size the data and iterations (default 10)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:i] (default auto: a GPU when PyTorch sees one)")
    p.add_argument("--restart", action="store_true", help="forget a previous run in DIR and plan again")
    p.add_argument("--refine-labels", action="store_true",
                   help="train on the PRN's refined labels too (prn.use_refined_labels=true); by default only its "
                        "noise mask is used, which adapts better on this benchmark")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test the whole chain in well under a minute on an idle CPU (26 small images, "
                        "12 + 16 iterations); "
                        "its numbers mean nothing")
    p.add_argument("--labels", type=int, default=0, metavar="K",
                   help="then run the few-label loop: prnseg label --suggest K picks K target images, their "
                        "ground truth stands in for a person labelling them, a second adaptation learns from them "
                        "and the report gives the gain (default 0: no loop)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def tiny_plan(device: str) -> Plan:
    return Plan(device=device, budget_minutes=0.0, n_source=12, n_target=10, n_val=4, size_hw=(128, 256),
                source_only_iters=12, prn_iters=16, prn_start_iter=4, label_batch=2, crop=128,
                checkpoint_every=4, tiny=True)


def make_plan(budget_minutes: float, device: str, labels: int = 0) -> Plan:
    """Data size and iterations that fit the budget: 30 % of training time warms up on the
    source, 70 % adapts with the PRN (its steps cost ~2.6x a source-only step). With ``labels``
    the 70 % holds two adaptations of equal length, without and with the K labelled images, so
    the report's gain compares like with like."""
    if budget_minutes < 2:
        raise PrnsegError(f"--budget-minutes {budget_minutes:g} is too small; the quickstart needs at least 2")
    budget = budget_minutes * 60.0
    if device.startswith("cuda"):
        # A GPU runs the tiny model ~10x faster: spend the budget on more data and iterations.
        step = {k: v / 10 for k, v in CPU_STEP_SECONDS.items()}
        fixed, n_source, n_target, n_val = 120.0, 1000, 1000, 100
    else:
        step, fixed = CPU_STEP_SECONDS, FIXED_SECONDS_CPU
        n_source, n_target, n_val = 300, 200, 50
    if labels > n_target:
        raise PrnsegError(f"--labels {labels}: the quickstart's target train split has {n_target} images; "
                          f"choose K <= {n_target}")
    train = max(30.0, budget - fixed)
    so = int(0.3 * train / step["source_only"])
    prn = int(0.7 * train / (step["prn"] + (step["prn_labels"] if labels else 0.0)))
    so, prn = max(100, min(so, 8000)), max(100, min(prn, 8000))
    return Plan(device=device, budget_minutes=budget_minutes, n_source=n_source, n_target=n_target,
                n_val=n_val, size_hw=(256, 512), train_hw=(128, 256), source_only_iters=so, prn_iters=prn,
                prn_start_iter=max(1, prn // 10), label_batch=8 if device.startswith("cuda") else 4, labels=labels)


class Quickstart:
    def __init__(self, out: Path, plan: Plan, progress: bool):
        self.out, self.plan, self.progress = out, plan, progress
        self.data = out / "data"
        self.runs = out / "runs"
        self.model = out / "model"
        self.labels = out / "labels"
        self.stages = 8 if plan.labels else 7

    # ---------------------------------------------------------------- helpers
    def _stage(self, n: int, title: str) -> None:
        print(f"\n[{n}/{self.stages}] {title}", flush=True)

    def _done(self, name: str) -> Path:
        return self.out / ".done" / name

    def elapsed(self) -> float:
        """Seconds spent in finished stages, over every (resumed) run."""
        return sum(json.loads(p.read_text()).get("seconds", 0.0) for p in (self.out / ".done").glob("*"))

    def _mark(self, name: str, seconds: float) -> None:
        """Mark stage ``name`` complete; stages that run again on resume add their seconds."""
        from prnseg.atomic import atomic_write_bytes

        path = self._done(name)
        if path.exists():
            seconds += json.loads(path.read_text()).get("seconds", 0.0)
        atomic_write_bytes(path, (json.dumps({"seconds": seconds}) + "\n").encode())

    # ---------------------------------------------------------------- stages
    def synth(self) -> None:
        self._stage(1, f"synthetic benchmark: {self.plan.n_source} source (GTA5 layout), {self.plan.n_target} "
                       f"target train + {self.plan.n_val} val (Cityscapes layout)")
        if self._done("synth").exists():
            print(f"  done already: {self.data}")
            return
        from prnseg import api

        t0 = time.perf_counter()
        api.synth(self.data, source=self.plan.n_source, target=self.plan.n_target, val=self.plan.n_val,
                  size=self.plan.size_hw, seed=0, workers=min(2, os.cpu_count() or 1), progress=self.progress,
                  overwrite=True, verbose=False)
        self._mark("synth", time.perf_counter() - t0)

    def config(self, mode: str, iters: int):
        """The ``synthetic`` config on this quickstart's data, sizes and device (a checked Config)."""
        from prnseg import api

        h, w = self.plan.train_hw or self.plan.size_hw
        cfg = api.load_config("synthetic")
        cfg.data.source.root, cfg.data.target.root = str(self.data / "gta"), str(self.data / "cityscapes")
        for split in (cfg.data.source, cfg.data.target, cfg.data.val):
            split.size = [h, w]
        cfg.data.crop = [self.plan.crop, self.plan.crop]
        cfg.uda.mode = mode
        cfg.train.iters, cfg.train.eval_every = iters, 0
        cfg.train.checkpoint_every = self.plan.checkpoint_every
        cfg.train.device = self.plan.device
        return cfg

    def _train(self, name: str, cfg) -> Path:
        from prnseg import api

        run = self.runs / name
        ckpt = run / "last.pt"
        if self._done(f"train_{name}").exists():
            print(f"  done already: {ckpt}")
            return ckpt
        t0 = time.perf_counter()
        api.train(cfg, run, resume=ckpt.exists(), progress=self.progress)
        self._mark(f"train_{name}", time.perf_counter() - t0)
        return ckpt

    def train_source_only(self) -> Path:
        self._stage(2, f"source-only warm-up ({self.plan.source_only_iters} iterations)")
        return self._train("source_only", self.config("source_only", self.plan.source_only_iters))

    def train_prn(self, init_from: Path) -> Path:
        self._stage(3, f"adaptation with the PRN ({self.plan.prn_iters} iterations, warm-started)")
        return self._train("prn", self.prn_config(init_from))

    def prn_config(self, init_from: Path):
        """The adaptation's config, warm-started from ``init_from``: both loop runs share it."""
        cfg = self.config("prn", self.plan.prn_iters)
        cfg.train.init_from = str(init_from)
        cfg.prn.start_iter = self.plan.prn_start_iter
        cfg.prn.use_refined_labels = self.plan.use_refined_labels
        return cfg

    def evaluate(self, source_ckpt: Path, prn_ckpt: Path) -> dict:
        self._stage(4, "evaluate on the target val split, before and after adaptation")
        t0 = time.perf_counter()
        result = {name: self._target_val(name, ckpt) for name, ckpt in (("source_only", source_ckpt),
                                                                         ("prn", prn_ckpt))}
        self._mark("eval", time.perf_counter() - t0)
        return result

    def _target_val(self, run: str, ckpt: Path) -> dict:
        """``run``'s target val metrics: its eval.json when a previous quickstart wrote it, else
        evaluated now (and written there)."""
        from prnseg import api

        path = self.runs / run / "eval.json"
        if path.exists():
            result = json.loads(path.read_text())
        else:
            result = api.evaluate(ckpt, self.data / "cityscapes", split="val", device=self.plan.device,
                                  json_path=path, progress=self.progress, verbose=False)
        print(f"  {run:<12} target val mIoU {100 * result['miou']:.1f}")
        return result

    def export(self, prn_ckpt: Path) -> None:
        self._stage(5, "export to ONNX (segmenter, PRN, fused pseudo-labeler) with the parity gate")
        if self._done("export").exists() and (self.model / "model.json").exists():
            print(f"  done already: {self.model}")
            return
        from prnseg import api

        t0 = time.perf_counter()
        api.export(prn_ckpt, self.model, overwrite=True)
        self._mark("export", time.perf_counter() - t0)

    def label(self) -> dict:
        self._stage(6, "pseudo-label the target train folder (labels only used to score the result)"
                    + (f"; suggest the {self.plan.labels} images most worth labelling" if self.plan.labels else ""))
        from prnseg import api

        cs = self.data / "cityscapes"
        opts = api.LabelOptions(input_dir=cs / "leftImg8bit" / "train", out_dir=self.labels, model_dir=self.model,
                                gt_dir=cs / "gtFine" / "train", batch=self.plan.label_batch,
                                workers=min(4, os.cpu_count() or 1), save=("color", "raw", "confidence"),
                                progress=self.progress)
        t0 = time.perf_counter()
        report = api.label(opts, suggest=self.plan.labels or None)
        if report["counts"]["failed"]:
            raise PrnsegError(f"stage 'label': {report['counts']['failed']} image(s) failed (see "
                              f"{self.labels / 'failures.jsonl'}); fix the cause above and run the same quickstart "
                              "command again to resume")
        self._mark("label", time.perf_counter() - t0)
        return report

    def train_with_labels(self, init_from: Path) -> tuple[Path, dict]:
        """The few-label loop's second adaptation: the ``prn`` run again from the same warm start,
        for as long, now with the K suggested images and their ground truth (the person's labels
        here) as ``data.target_labeled``; then its evaluation on target val."""
        k = self.plan.labels
        self._stage(7, f"adapt again with the {k} suggested images labelled (their synthetic ground truth stands "
                       "in for a person)")
        cfg = self.prn_config(init_from)
        cfg.data.target_labeled.root = str(self.data / "cityscapes")
        cfg.data.target_labeled.list = str(self.suggest_list())
        ckpt = self._train("prn_labels", cfg)
        t0 = time.perf_counter()
        result = self._target_val("prn_labels", ckpt)
        self._mark("eval_labels", time.perf_counter() - t0)
        return ckpt, result

    def suggest_list(self) -> Path:
        return self.labels / "suggest" / "suggest.txt"

    def command(self) -> str:
        """The command that resumes this quickstart."""
        p = self.plan
        opts = " --tiny" if p.tiny else f" --budget-minutes {p.budget_minutes:g}"
        return (f"prnseg quickstart --out {self.out}{opts} --device {p.device}"
                + (" --refine-labels" if p.use_refined_labels else "") + (f" --labels {p.labels}" if p.labels else ""))

    def next_commands(self) -> list[tuple[str, str]]:
        """(command, what it is for): each runs as printed."""
        h, w = self.plan.train_hw or self.plan.size_hw
        cs = self.data / "cityscapes"
        train = " ".join([
            "prnseg train --config synthetic", f"--set data.source.root={self.data / 'gta'}",
            f"--set data.target.root={cs}", *(f"--set data.{d}.size=[{h},{w}]" for d in ("source", "target", "val")),
            f"--set data.crop=[{self.plan.crop},{self.plan.crop}]", f"--set train.device={self.plan.device}",
            f"--set train.init_from={self.runs / 'prn' / 'last.pt'}", f"--set train.iters={2 * self.plan.prn_iters}",
            f"--set prn.use_refined_labels={str(self.plan.use_refined_labels).lower()}",
            f"--out {self.runs / 'prn-longer'}"])
        return [(f"prnseg demo --model {self.model}", "look at the result in the browser"),
                (f"prnseg label {cs / 'leftImg8bit' / 'val'} --model {self.model} --out {self.out / 'labels-val'}",
                 "label a folder of images (here the target val split), as you would your own"),
                (f"prnseg label {cs / 'leftImg8bit' / 'val'} --model {self.model} --out {self.out / 'labels-val-tta'} "
                 f"--tta --gt {cs / 'gtFine' / 'val'}",
                 "the same with test-time augmentation: better labels and mask, several times slower (README)"),
                (train, "adapt for longer, from the adapted checkpoint"),
                *([(f"prnseg export {self.runs / 'prn_labels' / 'last.pt'} --out {self.out / 'model-labels'}",
                    f"export the model that learnt from the {self.plan.labels} labelled images")]
                  if self.plan.labels else [])]

    # ---------------------------------------------------------------- report
    def few_labels_summary(self, evals: dict, labelled: dict) -> dict:
        """The few-label loop's gain: the student and its written pseudo-labels on target val,
        adapted without and with the K labelled images."""
        def pl(m: dict, which: str):
            return ((m.get("pseudo_labels") or {}).get(which) or {}).get("miou")

        adapted, with_k = evals["prn"], labelled
        return {"k": self.plan.labels, "list": str(self.suggest_list()),
                "target_val_miou": {"adapted": adapted["miou"], "with_labels": with_k["miou"],
                                    "gain": with_k["miou"] - adapted["miou"]},
                "pseudo_labels_val_miou": {"adapted_raw": pl(adapted, "raw"), "adapted_written": pl(adapted, "refined"),
                                           "with_labels_raw": pl(with_k, "raw"),
                                           "with_labels_written": pl(with_k, "refined")}}

    def _print_few_labels(self, few: dict) -> None:
        from prnseg.formatting import pct

        t, p = few["target_val_miou"], few["pseudo_labels_val_miou"]
        gain = 100 * t["gain"]
        print(f"  with {few['k']} labels{' ' * max(1, 9 - len(str(few['k'])))}adapted {pct(t['adapted'])}  ->  "
              f"with the {few['k']} suggested images labelled {pct(t['with_labels'])}   "
              f"({'+' if gain >= 0 else ''}{gain:.1f}; one seed, see the README for the 3-seed table)")
        print(f"                       written pseudo-labels on target val {pct(p['adapted_written'])} -> "
              f"{pct(p['with_labels_written'])} mIoU (the teacher's raw: {pct(p['adapted_raw'])} -> "
              f"{pct(p['with_labels_raw'])})")

    def report(self, evals: dict, label_report: dict, seconds: float, labelled: dict | None = None) -> dict:
        self._stage(self.stages, "report")
        from prnseg.atomic import atomic_write_bytes

        gt = label_report.get("gt") or {}
        before, after = evals["source_only"]["miou"], evals["prn"]["miou"]
        raw, refined = gt.get("raw", {}).get("miou"), gt.get("refined", {}).get("miou")
        kept = gt.get("kept") or {}
        noise = gt.get("noise_detector") or {}
        label_source = "PRN-refined" if self.plan.use_refined_labels else "teacher's (refinement off)"
        ips = (label_report.get("run") or {}).get("images_per_s")
        parity = {}
        if (self.model / "parity.json").exists():
            parity = json.loads((self.model / "parity.json").read_text())
        rep = {
            "plan": asdict(self.plan),
            "seconds_total": round(seconds, 1),
            "target_val_miou": {"source_only": before, "adapted": after, "gain": after - before},
            "adaptation_helps": after > before,
            "pseudo_labels_target_train": {"raw_miou": raw, "refined_miou": refined,
                                           "label_source": label_source,
                                           "raw_pixel_accuracy": gt.get("raw", {}).get("pixel_accuracy"),
                                           "kept_miou": kept.get("miou"), "kept_coverage": kept.get("coverage"),
                                           "kept_pixel_accuracy": kept.get("pixel_accuracy"),
                                           "noise_precision": noise.get("precision"),
                                           "noise_recall": noise.get("recall")},
            "refined_at_least_raw": (refined is not None and raw is not None and refined >= raw),
            "labelling_images_per_second": ips,
            "parity": parity.get("summary", parity),
            "paths": {"data": str(self.data), "source_only": str(self.runs / "source_only"),
                      "adapted": str(self.runs / "prn"), "model": str(self.model), "labels": str(self.labels)},
        }
        if labelled is not None:
            rep["few_labels"] = self.few_labels_summary(evals, labelled)
            rep["paths"]["with_labels"] = str(self.runs / "prn_labels")
        atomic_write_bytes(self.out / REPORT_FILE, (json.dumps(rep, indent=2) + "\n").encode())

        from prnseg.formatting import pct

        print(f"  target val mIoU      source-only {pct(before)}  ->  adapted (PRN) {pct(after)}"
              f"   ({'+' if after >= before else ''}{100 * (after - before):.1f})")
        print(f"  pseudo-labels        raw {pct(raw)}  ->  written {pct(refined)} mIoU on the target train images "
              f"(labels: {label_source})")
        on_kept = (f"{pct(kept.get('pixel_accuracy'))} on the {pct(kept.get('coverage'))} % the noise mask keeps "
                   f"(mIoU there {pct(kept.get('miou'))})" if kept.get("miou") is not None
                   else "the noise mask keeps no labelled pixel")
        print(f"                       pixel accuracy {pct(gt.get('raw', {}).get('pixel_accuracy'))} on all pixels -> "
              f"{on_kept}")
        print(f"  noise mask           precision {pct(noise.get('precision'))}  recall {pct(noise.get('recall'))}")
        if labelled is not None:
            self._print_few_labels(rep["few_labels"])
        print(f"  labelling            {ips:.1f} images/s" if ips else "  labelling            n/a")
        print(f"  total                {seconds / 60:.1f} min (all runs of this quickstart)")
        print(f"\nwritten under {self.out}:")
        for k, v in rep["paths"].items():
            print(f"  {k:<12} {v}")
        print(f"  report       {self.out / REPORT_FILE}")
        print()
        for line, comment in self.next_commands():
            print(f"next: {line}   # {comment}")
        print("the paper setting (GTA5 -> Cityscapes, MiT-B5, a GPU): see the README, section Training")
        return rep


def _mismatch(plan: Plan, device: str, budget: float | None, tiny: bool, refine_labels: bool,
              labels: int) -> str | None:
    """What this command asks for that the saved plan does not hold, or None."""
    if plan.device != device:
        return f"planned for {plan.device}, this run would use {device}"
    if tiny != plan.tiny:
        return "planned as --tiny" if plan.tiny else "planned without --tiny"
    if budget is not None and not plan.tiny and budget != plan.budget_minutes:
        return f"planned for --budget-minutes {plan.budget_minutes:g}, not {budget:g}"
    if refine_labels and not plan.use_refined_labels:
        return "planned without --refine-labels"
    if labels and labels != plan.labels:
        return f"planned with --labels {plan.labels}" if plan.labels else "planned without --labels"
    return None


def _load_or_make_plan(out: Path, budget: float | None, device: str, restart: bool, tiny: bool,
                       refine_labels: bool, labels: int = 0) -> Plan:
    from prnseg.atomic import atomic_write_bytes

    path = out / PLAN_FILE
    if path.exists() and not restart:
        try:
            doc = json.loads(path.read_text())
            doc["size_hw"] = tuple(doc["size_hw"])
            doc["train_hw"] = tuple(doc["train_hw"]) if doc.get("train_hw") else None
            plan = Plan(**doc)
        except (ValueError, KeyError, TypeError):
            raise PrnsegError(f"{path}: not a plan this prnseg can resume (damaged, or written by another "
                              "version); pass --restart to plan again") from None
        why = _mismatch(plan, device, budget, tiny, refine_labels, labels)
        if why:
            raise PrnsegError(f"{path}: {why}; pass --restart to plan again (this discards the run in {out}), or "
                              "repeat the original options to resume")
        print(f"resuming the quickstart in {out} (planned {plan.source_only_iters} + {plan.prn_iters} iterations "
              f"on {plan.device}; --restart plans again)")
        return plan
    if tiny and labels > tiny_plan(device).n_target:
        raise PrnsegError(f"--labels {labels}: --tiny's target train split has {tiny_plan(device).n_target} images; "
                          f"choose K <= {tiny_plan(device).n_target}")
    plan = tiny_plan(device) if tiny else make_plan(10.0 if budget is None else budget, device, labels)
    plan.use_refined_labels, plan.labels = refine_labels, labels
    if restart and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(asdict(plan), indent=2) + "\n").encode())
    return plan


def check_out(out: Path) -> None:
    """``out`` is new, empty or a quickstart folder, and writable; nothing is created here."""
    if out.exists() and not out.is_dir():
        raise PrnsegError(f"{out}: is a file; choose another --out")
    if out.exists() and not (out / PLAN_FILE).exists() and any(out.iterdir()):
        raise PrnsegError(f"{out}: exists and is not a quickstart folder; choose another --out")
    probe_dir = out if out.exists() else next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise PrnsegError(f"{out}: cannot write there ({probe_dir} is not writable); choose another --out")


class QuickstartInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the quickstart; the command that resumes it was printed."""


def quickstart(out: Path, *, budget_minutes: float | None = None, device: str | None = None, restart: bool = False,
               refine_labels: bool = False, tiny: bool = False, labels: int = 0, progress: bool = True) -> dict:
    """The quickstart in ``out`` (:func:`prnseg.api.quickstart`); returns the report."""
    out = Path(out)
    if budget_minutes is not None and tiny:
        raise PrnsegError("--tiny has a fixed plan; drop --budget-minutes (or --tiny)")
    if budget_minutes is not None and budget_minutes < 2:
        raise PrnsegError(f"--budget-minutes {budget_minutes:g} is too small; the quickstart needs at least 2")
    if labels < 0:
        raise PrnsegError(f"--labels {labels}: give the number of images to label, at least 1 (or 0: no loop)")
    check_out(out)
    require("export", "the quickstart (it trains, then exports)")
    device = resolve_device(device).short    # cpu, cuda, cuda:N: the form the plan records
    plan = _load_or_make_plan(out, budget_minutes, device, restart, tiny, refine_labels, labels)
    qs = Quickstart(out, plan, progress=progress)
    try:
        qs.synth()
        so = qs.train_source_only()
        prn = qs.train_prn(so)
        evals = qs.evaluate(so, prn)
        qs.export(prn)
        label_report = qs.label()
        labelled = qs.train_with_labels(so)[1] if plan.labels else None
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume from here ({qs.command()})",
              file=sys.stderr)
        raise QuickstartInterrupted from None
    return qs.report(evals, label_report, qs.elapsed(), labelled)


def run(args: argparse.Namespace) -> int:
    from prnseg import api

    try:
        api.quickstart(args.out, budget_minutes=args.budget_minutes, device=args.device, restart=args.restart,
                       refine_labels=args.refine_labels, tiny=args.tiny, labels=args.labels,
                       progress=not args.no_progress)
    except QuickstartInterrupted:
        return 130
    return 0
