"""The Python API under the ``prnseg`` command: one typed function per mode.

As ``YOLO(...).train()`` sits under ``yolo train``, every ``prnseg MODE`` parses its arguments and
calls the function here; the quickstart, ``prnseg bench`` and the scripts in ``bench/`` call these
functions with config and option objects, never CLI strings::

    from prnseg import api

    api.synth("data", source=40, target=30, val=10)
    cfg = api.load_config("synthetic", {"data.source.root": "data/gta", "data.target.root": "data/cityscapes",
                                        "train.iters": 400, "prn.start_iter": 100})
    cfg.uda.mode = "prn"                                     # or edit the typed object
    run = api.train(cfg, "runs/mine")                        # -> TrainResult: checkpoint, summary
    metrics = api.evaluate(run.checkpoint, "data/cityscapes")  # -> dict: miou, per_class_iou, pseudo_labels
    model = api.export(run.checkpoint, "runs/mine/model")    # -> ExportResult: model_dir, model.json
    report = api.label(api.LabelOptions(input_dir="data/cityscapes/leftImg8bit/train",
                                        out_dir="runs/mine/labels", model_dir=model.model_dir))

Configs are checked when a function is called, as a YAML file is: a misspelled key (in a
``load_config`` / ``override`` mapping, or set as an attribute, ``cfg.uda.mdoe = ...``), a wrongly
typed value or one out of range is a :class:`~prnseg.errors.ConfigError` naming the key, before
anything is written. Every error a user can fix is a :class:`~prnseg.errors.PrnsegError` with a
one-line message (the CLI prints it as ``prnseg MODE: error: ...``).

Importing this module is cheap (no torch, no OpenCV): each function imports its part when called.
:func:`synth` (``workers`` > 1) and :func:`run_isolated` start spawned processes, which import the
calling script again: in a script, call them under ``if __name__ == "__main__":``.
With ``verbose`` (the default) a function prints what its command prints, except the ``next:``
commands, which only the CLI prints.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from prnseg.checks import check_checkpoint, check_dir
from prnseg.errors import PrnsegError
from prnseg.extras import missing_extra, require

if TYPE_CHECKING:
    from prnseg.bench.settings import Settings
    from prnseg.serve.label_options import LabelOptions
    from prnseg.training.config import Config

#: The network's output stride: export sizes are multiples of it.
STRIDE = 32

__all__ = ["Config", "ExportResult", "IsolatedRunError", "LabelOptions", "Settings", "TrainResult", "bench",
           "bench_settings", "evaluate", "export", "label", "load_config", "override", "quickstart", "run_isolated",
           "synth", "train"]


def __getattr__(name: str):
    """The option types, importable from here without importing their parts up front."""
    if name == "Config":
        from prnseg.training.config import Config

        return Config
    if name == "LabelOptions":
        from prnseg.serve.label_options import LabelOptions

        return LabelOptions
    if name == "Settings":
        from prnseg.bench.settings import Settings

        return Settings
    raise AttributeError(f"module 'prnseg.api' has no attribute {name!r}")


# ------------------------------------------------------------------------------------------ configs
def load_config(name_or_path: str | os.PathLike = "synthetic",
                overrides: Mapping[str, Any] | Iterable[str] = ()) -> Config:
    """A shipped config by name (``synthetic``, ``gta2cityscapes``, ...) or a YAML file, with
    ``overrides``: a mapping of dotted keys to values (``{"train.iters": 200, "data.crop": (256, 256)}``;
    paths may be ``Path`` objects), or ``key=value`` strings as ``--set`` takes them. An unknown key,
    a wrong type or a value out of range raises ``ConfigError`` naming the key."""
    from prnseg.training.config import load_config as _load

    return _load(os.fspath(name_or_path), overrides)


def override(config: Config, overrides: Mapping[str, Any] | Iterable[str]) -> Config:
    """A new, checked Config: ``config`` with ``overrides`` (as :func:`load_config` takes them) applied."""
    from prnseg.training.config import override_config

    return override_config(config, overrides)


def _config(config) -> Config:
    from prnseg.training.config import check_config, load_config as _load

    if isinstance(config, (str, os.PathLike)):
        return _load(os.fspath(config))
    return check_config(config)


# ------------------------------------------------------------------------------------------- synth
def synth(out: str | os.PathLike, *, source: int = 500, target: int = 500, val: int = 100,
          size: str | Sequence[int] = "256x512", seed: int = 0, night: bool = False, gap: float = 1.0,
          version: int | None = None, preview: str | os.PathLike | None = None, workers: int | None = None,
          overwrite: bool = False, progress: bool = True, verbose: bool = True) -> dict:
    """Write the synthetic domain-shift benchmark (``prnseg synth``) to ``out``; ``size`` is
    HEIGHTxWIDTH (``"256x512"`` or ``(256, 512)``). Returns what ``synth.json`` records (counts,
    size as [W, H], layouts, generator version, timing)."""
    from prnseg.sizes import parse_hw

    h, w = parse_hw(size, "--size")
    from prnseg.training.data.synthetic import SYNTH_VERSION, write_benchmark

    workers = max(1, min(2, os.cpu_count() or 1)) if workers is None else workers
    info = write_benchmark(out, source, target, val, size=(w, h), seed=seed, night=night, preview=preview,
                           workers=workers, progress=progress, gap=gap, overwrite=overwrite,
                           version=SYNTH_VERSION if version is None else version)
    if verbose:
        _print_synth(info)
    return info


def _print_synth(info: dict) -> None:
    c = info["counts"]
    w, h = info["size"]
    tname = "Dark Zurich night" if info["night"] else "Cityscapes"
    print(f"wrote the synthetic benchmark to {info['out']} ({h}x{w} HxW, seed {info['seed']}, gap {info['gap']:g}, "
          f"generator version {info['version']})")
    print(f"  source  {info['layouts']['source']}  GTA5 layout: {c['source']} images + labelIds "
          f"({info['classes_present']['source/train']}/19 classes)")
    tkey = "night" if info["night"] else "target"
    print(f"  target  {info['layouts']['target']}  {tname} layout: train {c['target']} "
          f"(labels only to score pseudo-labels), val {c['val']} with labels "
          f"({info['classes_present'][f'{tkey}/train']}/19 classes)")
    if info["preview"]:
        print(f"  preview {info['preview']}")
    print(f"  {info['images']} images, {info['files']} files in {info['seconds']:.1f} s "
          f"({info['images_per_second']:.1f} images/s, {info['workers']} worker(s))")


# ------------------------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """What :func:`train` leaves: the final checkpoint and the run's ``summary.json``."""

    checkpoint: Path  # OUT/last.pt
    out: Path
    config: Config  # the checked config the run trained with (also in OUT/config.yaml)
    summary: dict | None = None  # OUT/summary.json: step, median step time, peak memory
    is_main: bool = True  # False on the other ranks of a torchrun job, which print nothing


def train(config: Config | str, out: str | os.PathLike | None = None, *, resume: bool = False,
          progress: bool = True, verbose: bool = True) -> TrainResult:
    """Adapt a model (``prnseg train``): ``config`` is a :class:`Config` (see :func:`load_config`)
    or a shipped config's name; ``out`` defaults to ``runs/<config name>``. ``resume`` continues
    from ``out/last.pt``. The config, the data roots, ``train.init_from`` and the checkpoint to
    resume are checked before torch loads; a run that fails before its first checkpoint leaves no
    folder behind."""
    cfg = _config(config)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    _check_train_inputs(cfg, out, resume)
    require("train", "training")
    created = not out.exists()
    try:
        ckpt = _fit(cfg, out, resume, progress, verbose)
    except BaseException:
        if created and out.is_dir() and not (out / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    from prnseg.training import distributed as dist_utils

    main = dist_utils.is_main()
    if verbose and main:
        print(f"checkpoint: {ckpt}")
    return TrainResult(checkpoint=ckpt, out=out, config=cfg, summary=_read_json(out / "summary.json"), is_main=main)


def _check_train_inputs(cfg, out: Path, resume: bool) -> None:
    """The paths a run needs, checked before torch loads: data roots, ``train.init_from``, and the
    checkpoint a resume continues from."""
    roots = [("source", cfg.data.source.root)]
    if cfg.uda.mode != "source_only":
        roots.append(("target", cfg.data.target.root))
    for key, root in roots:
        if not root:
            raise PrnsegError(f"config key 'data.{key}.root' is empty; pass --set data.{key}.root=DIR")
        check_dir(root, f"data.{key}.root")
    if cfg.train.init_from and not resume:
        check_checkpoint(cfg.train.init_from, "train.init_from")
    if resume:
        if not (out / "last.pt").is_file():
            raise PrnsegError(f"{out / 'last.pt'}: nothing to resume from; run without --resume to start")
        check_checkpoint(out / "last.pt", "--resume")


def _fit(cfg, out: Path, resume: bool, progress: bool, verbose: bool) -> Path:
    from prnseg.training import distributed as dist_utils
    from prnseg.training.trainer import UDATrainer

    trainer = UDATrainer(cfg, out, resume=resume, progress=progress)
    if verbose and dist_utils.is_main():
        where = (f"resuming at iteration {trainer.step}" if resume
                 else f"student from {cfg.train.init_from}" if cfg.train.init_from
                 else f"encoder from {cfg.model.pretrained}" if cfg.model.pretrained else "from scratch")
        labelled = trainer.labeled_target
        with_labels = (f", with {len(labelled)} labelled target images from {cfg.data.target_labeled.root}"
                       if labelled is not None else "")
        print(f"training '{cfg.name}' ({cfg.uda.mode}, {cfg.model.arch}/{cfg.model.head}) on {trainer.device}, "
              f"{cfg.train.iters} iterations, {where}{with_labels}; writing {out}")
    return trainer.fit()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, *, kind: str | None = None,
             split: str = "val", weights: str = "student", classes: str = "all", max_images: int = 0,
             device: str = "auto", refine_sweep: Sequence[float] | str = (),
             json_path: str | os.PathLike | None = None, progress: bool = True, verbose: bool = True) -> dict:
    """Score a checkpoint on a labelled split (``prnseg eval``): mIoU, per-class IoU and, for a
    PRN checkpoint, pseudo-label quality (raw vs written labels, noise-mask AUROC). ``kind``
    defaults to the checkpoint's val dataset kind; ``refine_sweep`` also scores the written labels
    at these ``prn.refine_min_confidence`` values; ``json_path`` also writes the metrics there."""
    check_checkpoint(checkpoint)
    check_dir(data, "--data")
    if max_images < 0:
        raise PrnsegError(f"--max-images must be >= 0, got {max_images}")
    sweep = _sweep_values(refine_sweep)
    require("train", "evaluation")
    from prnseg.training.evaluate import evaluate_checkpoint, format_metrics

    metrics = evaluate_checkpoint(checkpoint, data, kind=kind, split=split, weights=weights, classes=classes,
                                  max_images=max_images, device=device, progress=progress, sweep=sweep)
    if verbose:
        print(format_metrics(metrics))
    if json_path:
        from prnseg.atomic import atomic_write_bytes

        atomic_write_bytes(json_path, (json.dumps(metrics, indent=2) + "\n").encode())
        if verbose:
            print(f"wrote {json_path}")
    return metrics


def _sweep_values(sweep: Sequence[float] | str) -> list[float]:
    """``"0,0.5,0.9"`` (as ``--refine-sweep`` takes it) or numbers -> floats >= 0."""
    text = sweep if isinstance(sweep, str) else ",".join(str(v) for v in sweep)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrnsegError(f"--refine-sweep {text!r}: expected comma-separated numbers, e.g. 0,0.5,0.9") from None
    if any(v < 0 for v in values):
        raise PrnsegError(f"--refine-sweep {text!r}: confidences must be >= 0")
    return values


# ------------------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What :func:`export` leaves: a model directory that ``prnseg label``, the demo and
    :func:`label` read."""

    model_dir: Path
    model: dict  # the directory's model.json: artefacts, buckets, parity summary, ready
    checkpoint: Path


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, *, weights: str = "auto",
           sizes: Sequence[str | Sequence[int]] | None = None, max_batch: int = 8, fp16: bool = False,
           tensorrt: bool = False, triton: bool = False, calib: str | os.PathLike | None = None,
           calib_images: int = 8, opset: int = 17, overwrite: bool = False, noise_from: str = "confidence",
           progress: bool = True, verbose: bool = True) -> ExportResult:
    """Export a checkpoint to ONNX (``prnseg export``; + fp16, TensorRT, Triton) behind the parity
    gate. ``sizes`` are HEIGHTxWIDTH buckets in multiples of 32 (``"256x512"`` or ``(256, 512)``;
    default: the config's val size). ``noise_from`` (a PRN checkpoint): ``confidence`` or ``prn``,
    what the noise output comes from (``prnseg export --noise-from``). Raises ``ParityGateError``
    (a not-ready directory is left to inspect) when the artefacts disagree with PyTorch."""
    from prnseg.sizes import parse_hw

    for s in sizes or []:
        parse_hw(s, "--size", STRIDE, error=PrnsegError)
    given = checkpoint
    checkpoint = check_checkpoint(checkpoint)
    if calib:
        check_dir(calib, "--calib")
    if max_batch < 1:
        raise PrnsegError(f"--max-batch {max_batch}: must be >= 1")
    require("export", "export")
    from prnseg.export.exporter import export_model

    model_dir = Path(export_model(checkpoint, out, weights=weights, sizes=sizes, max_batch=max_batch, fp16=fp16,
                                  tensorrt=tensorrt, triton=triton, calib_dir=calib, progress=progress, opset=opset,
                                  overwrite=overwrite, calib_images=calib_images, noise_from=noise_from))
    doc = json.loads((model_dir / "model.json").read_text())
    if verbose:
        _print_export(given, model_dir, doc)
    return ExportResult(model_dir=model_dir, model=doc, checkpoint=checkpoint)


def _print_export(checkpoint, out: Path, doc: dict) -> None:
    from prnseg.formatting import pct

    print(f"exported {checkpoint} ({doc['checkpoint']['weights']} weights, iteration "
          f"{doc['checkpoint']['iteration']}) to {out}")
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"  {f.relative_to(out)}  ({f.stat().st_size / 1e6:.2f} MB)")
    for name, m in doc["parity"]["summary"].items():
        if "label_agreement" in m:
            print(f"parity {name}: label agreement {pct(m['label_agreement'], 3, suffix='%')}, noise agreement "
                  f"{pct(m['noise_agreement'], 3, suffix='%')}, mIoU delta {m['miou_delta']:.3f} "
                  f"({m['miou_delta_basis']})")
    buckets = ", ".join(f"{b['height']}x{b['width']}" for b in doc["input"]["buckets"])
    print(f"ready: buckets {buckets} (HxW), batch 1..{doc['input']['max_batch']}, outputs "
          f"{', '.join(doc['outputs'])}")


# ------------------------------------------------------------------------------------------- label
def label(options: LabelOptions, *, suggest: int | None = None, log: Callable[[str], None] | None = None,
          verbose: bool = True) -> dict:
    """Pseudo-label a folder (``prnseg label``) as ``options`` say: refined labels, noise masks and
    the ``save`` outputs under ``options.out_dir``; resumable. Returns the run's report (counts,
    speed, and with ``gt_dir`` raw vs refined mIoU and noise-mask precision / recall); with
    ``suggest=K`` also writes ``out_dir/suggest/`` (the K images most worth hand-labelling) and
    adds what it wrote as ``report["suggest"]``. ``log`` receives progress notes (default:
    stderr). Failed images are counted in ``report["counts"]["failed"]``, not raised."""
    if suggest is not None and suggest < 1:
        from prnseg.serve.suggest import SuggestError

        raise SuggestError(f"--suggest {suggest}: give the number of images to suggest, at least 1")
    from prnseg.serve.pipeline import label_folder

    report = label_folder(options, log=log or _to_stderr)
    if verbose:
        _print_label(report, options)
    if suggest is not None:
        report["suggest"] = _suggest(suggest, options, verbose)
    return report


def _to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _print_label(report: dict, opts: LabelOptions) -> None:
    from prnseg.formatting import pct

    out, tag = opts.out_dir, opts.tag
    c, run = report["counts"], report["run"]
    rate = f", {run['images_per_s']:.1f} images/s" if run.get("images_per_s") and c["labelled_this_run"] else ""
    where = f" on {run['provider']}" if run.get("provider") else ""
    print(f"labelled {c['labelled_this_run']} images, {c['failed_this_run']} failed, {c['skipped_finished']} "
          f"already done{rate}{where}")
    print(f"{c['ok']}/{c['listed']} images labelled in {out} ({', '.join(report['outputs'])}); "
          f"manifest {out / f'manifest{tag}.jsonl'}, report {out / f'report{tag}.json'}")
    if c["failed"]:
        print(f"{c['failed']} failed images: see {out / f'failures{tag}.jsonl'}")
    gt = report.get("gt")
    if gt:
        nd, kept = gt["noise_detector"], gt["kept"]
        on_kept = (f"{pct(kept['miou'])} on the {pct(kept.get('coverage'))} % of pixels the noise mask keeps"
                   if kept.get("miou") is not None else "the noise mask keeps no labelled pixel")
        print(f"pseudo-labels on {gt['n_images']} labelled images: raw mIoU {pct(gt['raw']['miou'])} -> written "
              f"{pct(gt['refined']['miou'])}, {on_kept}; noise mask precision {pct(nd['precision'])} recall "
              f"{pct(nd['recall'])}" + (f" ({gt['n_missing']} without ground truth)" if gt["n_missing"] else ""))
    if c["remaining"] or c["failed"]:
        print("re-run the same command to resume (finished images are skipped, failed ones retried)")


def _suggest(k: int, opts: LabelOptions, verbose: bool) -> dict:
    from prnseg.model_spec import load_model_spec
    from prnseg.serve.label_journal import previous_records
    from prnseg.serve.suggest import write_suggestions

    spec = load_model_spec(opts.model_dir)
    s = write_suggestions(opts.out_dir, opts.input_dir, previous_records(opts.out_dir, opts.tag), list(spec.classes),
                          spec.palette, k)
    if verbose:
        print(f"suggest: the {s['chosen']} images most worth labelling, ranked, in {s['list']}; copies in "
              f"{opts.out_dir / 'suggest' / 'images'}, pre-annotations {s['cvat']} (CVAT: create a task from "
              f"the copies, then Actions > Upload annotations > Segmentation mask 1.1)")
    return s


# -------------------------------------------------------------------------------------- quickstart
def quickstart(out: str | os.PathLike = "prnseg-quickstart", *, budget_minutes: float | None = None,
               device: str | None = None, restart: bool = False, refine_labels: bool = False, tiny: bool = False,
               labels: int = 0, progress: bool = True) -> dict:
    """The main job end to end on the synthetic benchmark (``prnseg quickstart``): synth ->
    source-only warm-up -> PRN adaptation -> eval -> export -> label -> ``out/report.json``, which
    it returns. A second call with the same arguments resumes an interrupted one (a finished stage
    is skipped); ``restart`` plans again. ``labels=K`` then runs the few-label loop (suggest K,
    their ground truth as the labels, adapt again, report the gain). Ctrl-C raises
    ``prnseg.quickstart.QuickstartInterrupted`` (a ``KeyboardInterrupt``) after printing the command
    that resumes."""
    from prnseg.quickstart import quickstart as run

    return run(Path(out), budget_minutes=budget_minutes, device=device, restart=restart,
               refine_labels=refine_labels, tiny=tiny, labels=labels, progress=progress)


# ------------------------------------------------------------------------------------------- bench
def bench_settings(**options) -> Settings:
    """``prnseg bench`` settings from keyword options named as its long options (``quick=True``,
    ``arch=["tiny"]``, ``sizes=["128x256"]``, ``batch=[1, 2]``, ``out="runs/bench"``, ...; the
    command's defaults otherwise), checked and resolved as the command resolves them."""
    import argparse

    from prnseg.bench.settings import add_bench_arguments, settings_from_args

    parser = argparse.ArgumentParser(prog="prnseg bench")
    add_bench_arguments(parser)
    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise PrnsegError(f"bench_settings: unknown option {unknown[0]!r}; options: {', '.join(sorted(vars(args)))}")
    for key, value in options.items():
        setattr(args, key, str(value) if isinstance(value, os.PathLike) else value)
    return settings_from_args(args)


def bench(settings: Settings, *, verbose: bool = True) -> dict:
    """Measure every inference backend (speed, parity) and the training step cost on this machine
    (``prnseg bench``), as ``settings`` (see :func:`bench_settings`) say. Writes
    ``settings.out/bench.json`` and ``bench.md`` as it goes and returns the ``bench.json`` document."""
    from prnseg.bench.report import print_summary
    from prnseg.bench.run import measure

    results = measure(settings)
    if verbose:
        print_summary(results)
    return json.loads((settings.out / "bench.json").read_text())


# ------------------------------------------------------------------------------- process isolation
class IsolatedRunError(PrnsegError):
    """A call made by :func:`run_isolated` failed in its child process; the message is the
    child's one-line error (``Type: message`` for an unexpected exception, whose traceback the
    child printed)."""


def run_isolated(function: str | Callable, /, *args, output_file: str | os.PathLike | None = None, **kwargs):
    """``prnseg.api.<function>(*args, **kwargs)`` (or any module-level ``function``) in a fresh
    interpreter (multiprocessing's spawn context), returning what it returns.

    For benchmarks that need each run on its own: its peak memory its own (a forked child would
    start from this process's), no state left behind by the previous run, and a crash that takes
    only that run down. Arguments and the result travel pickled (configs, options and results here
    all do). The child's stdout and stderr are this process's, or ``output_file`` (appended).
    A failure in the child raises :class:`IsolatedRunError` here with the child's one-line error."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    target = function if callable(function) else _api_function(function)
    name = getattr(target, "__name__", str(function))
    out = os.fspath(output_file) if output_file is not None else None
    process = ctx.Process(target=_isolated_main, args=(writer, target, args, kwargs, out), name=f"prnseg-{name}")
    process.start()
    writer.close()
    status = value = None
    try:
        try:
            status, value = reader.recv()
        except EOFError:  # it ended without a word: killed (out of memory?) or os._exit
            pass
    finally:
        reader.close()
        process.join(timeout=None if status is not None else 60)
        if process.is_alive():
            process.kill()
            process.join()
    if status == "ok":
        return value
    if status is None:
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        raise IsolatedRunError(f"{name}: the child process ended without a result ({how}"
                               + ("; out of memory?" if code == -9 else "") + ")")
    if status == "interrupted":
        raise KeyboardInterrupt
    raise IsolatedRunError(value)


def _api_function(name: str) -> Callable:
    fn = globals().get(name)
    if name.startswith("_") or not callable(fn) or name in ("run_isolated", "__getattr__"):
        raise PrnsegError(f"run_isolated: prnseg.api has no function {name!r}")
    return fn


def _isolated_main(conn, function: Callable, args: tuple, kwargs: dict, output_file: str | None) -> None:
    """The child's side of :func:`run_isolated`: call, then send ("ok", result) or the error."""
    if output_file:
        fd = os.open(output_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        result = function(*args, **kwargs)
        message = ("ok", result)
    except PrnsegError as exc:
        message = ("error", str(exc))
    except KeyboardInterrupt:
        message = ("interrupted", None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, traceback printed here
        extra = missing_extra(exc, f"prnseg.api.{getattr(function, '__name__', function)}")
        if extra is not None:
            message = ("error", str(extra))
        else:
            import traceback

            traceback.print_exc()
            text = str(exc).strip().splitlines()
            message = ("error", f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    conn.send(message)
    conn.close()
