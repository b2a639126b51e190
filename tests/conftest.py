import os
import subprocess
import sys
from pathlib import Path

import pytest

# Keep torch from oversubscribing the small CI machines; each test process uses few threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def run_cli(*args, check=True, timeout=600, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``prnseg ARGS`` as a real subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "prnseg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"prnseg {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT, as Ctrl-C in a terminal would: a
    runner that starts the suite as a background job leaves SIGINT ignored, which children inherit
    and which keeps Python from installing its KeyboardInterrupt handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Prepended to a child interpreter's code: every `import torch` fails, as where torch is absent.
BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, _NoTorch())
"""


def run_python_without_torch(code: str, timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where torch cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark shared by the training, eval and export tests."""
    from prnseg.training.data.synthetic import write_benchmark

    root = tmp_path_factory.mktemp("synth")
    write_benchmark(root, n_source=10, n_target=8, n_val=4, size=(256, 128), seed=0, workers=1, progress=False,
                    overwrite=True)
    return root


def tiny_train_args(root: Path, out: Path, mode: str = "prn", iters: int = 3, extra=()) -> list[str]:
    """`prnseg train` arguments for a seconds-long run on the shared tiny benchmark."""
    sets = [
        f"data.source.root={root / 'gta'}", f"data.target.root={root / 'cityscapes'}",
        "data.source.size=[128,256]", "data.target.size=[128,256]", "data.val.size=[128,256]",
        "data.crop=[128,128]", "data.workers=0", f"uda.mode={mode}", f"train.iters={iters}",
        "train.eval_every=0", "train.checkpoint_every=1", "train.log_every=1", "prn.start_iter=1",
        "uda.contrastive.max_samples=256", *extra,
    ]
    return ["train", "--config", "synthetic", "--out", str(out), "--no-progress",
            *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="session")
def prn_checkpoint(synth_root, tmp_path_factory) -> Path:
    """A 2-iteration `prn` checkpoint (teacher + PRN) trained on ``synth_root``."""
    run = tmp_path_factory.mktemp("prn_run")
    run_cli(*tiny_train_args(synth_root, run, "prn", iters=2))
    return run / "last.pt"


@pytest.fixture(scope="session")
def exported_model(prn_checkpoint, tmp_path_factory) -> Path:
    """A model directory exported from ``prn_checkpoint``: bucket 128x256 (H x W), max batch 4,
    pseudolabeler.onnx and pseudolabeler_fp16.onnx, both through the parity gate."""
    from prnseg.export import export_model

    out = tmp_path_factory.mktemp("exported") / "model"
    return export_model(prn_checkpoint, out, sizes=["128x256"], max_batch=4, fp16=True, progress=False)


@pytest.fixture(scope="session")
def noise_only_model(synth_root, tmp_path_factory) -> Path:
    """A model that writes the teacher's labels and uses the PRN only for its noise mask
    (trained with ``prn.use_refined_labels=false``; ``label_source: segmenter``)."""
    from prnseg.export import export_model

    run = tmp_path_factory.mktemp("noise_only_run")
    run_cli(*tiny_train_args(synth_root, run, "prn", iters=2, extra=("prn.use_refined_labels=false",)))
    out = tmp_path_factory.mktemp("exported_noise_only") / "model"
    return export_model(run / "last.pt", out, sizes=["128x256"], max_batch=2, progress=False)
