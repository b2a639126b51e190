"""``prnseg bench``: speed and accuracy of every inference backend, and the training step cost, here.

Like ``yolo benchmark``: for each encoder (random weights, or an exported model as is), size and
batch it exports the model with ``prnseg export`` (fp32 + fp16, TensorRT plans where TensorRT and
a GPU are present) and measures, per backend and precision:

- **engine**: the pseudo-labelling graph alone on pre-decoded, bucket-sized uint8 batches (host
  to device and back included, warm-up excluded): median and p90 latency per batch, images/s;
- **end to end**: real PNG files on disk through the ``prnseg label`` pipeline (decode + resize
  + infer + encode + write), images/s;
- **parity**: label / raw-label / noise agreement with PyTorch fp32 on the same inputs
  (synthetic target-style scenes from the built-in benchmark's renderer).

PyTorch eager runs ``export.graphs.PseudoLabeler``, the module the export traces and its parity
gate compares against, so every backend computes the same thing. The training part times a few
``UDATrainer`` steps of ``self_training`` and ``prn``, each a ``prnseg.api.train`` call in a fresh
interpreter (``api.run_isolated``, so each one's peak memory is its own), and reads their
``summary.json``. ``prnseg.api.bench(settings)`` runs it all from Python.

Results go to ``OUT/bench.json`` and ``OUT/bench.md`` (rewritten atomically after every step, so
an interrupted run keeps what it measured). Nothing is faked: a backend that cannot run here is
a row that says why.

The package follows a run's seams: ``settings`` (options -> ``Settings``; ``device`` resolves
``--device``), ``machine``, ``targets`` (the models measured), ``measure`` (timing and parity,
backend-free), ``inference`` and ``training`` (the rows), ``report`` and ``progress`` (what is
said) and ``run`` (the order of it all).
"""

from prnseg.bench.errors import BenchError
from prnseg.bench.measure import make_batches, parity, timed_runs
from prnseg.bench.run import run_bench
from prnseg.bench.settings import Settings, add_bench_arguments

__all__ = ["BenchError", "Settings", "add_bench_arguments", "make_batches", "parity", "run_bench", "timed_runs"]
