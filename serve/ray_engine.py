"""``prnseg label --engine ray``: the same Predictor and writer on a Ray Data cluster.

The plan (listing, shard, resume) and the journal stay on the driver; Ray Data streams the
to-do paths through ``map_batches`` to a pool of actors, each holding one ``Predictor``: one
actor per GPU (``num_gpus=1``) when the cluster has GPUs, else a small CPU pool sharing the
cores. Workers write every output atomically to the shared OUT_DIR and return the manifest
records; the driver journals a record only after its files exist, so resume works as for the
local engine. ``ray.init()`` joins the cluster named by ``RAY_ADDRESS`` or starts a local one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict

import numpy as np

from prnseg.model_spec import ModelSpec
from prnseg.serve.label_journal import Journal
from prnseg.serve.label_local import label_items
from prnseg.serve.label_options import LabelError, LabelOptions
from prnseg.serve.label_plan import Item, Plan
from prnseg.serve.label_writer import OutputWriter


class LabelActor:
    """A Predictor and an OutputWriter living in one Ray actor."""

    def __init__(self, options: dict, threads: int | None, device: str):
        from prnseg.serve.predictor import Predictor

        self.opts = LabelOptions(**options)
        self.predictor = Predictor(self.opts.model_dir, backend=self.opts.backend, device=device,
                                   precision=self.opts.precision, threads=threads, max_batch=self.opts.batch,
                                   tta=self.opts.tta, logit_adjustment=self.opts.logit_adjustment)
        self.writer = OutputWriter(self.opts, self.predictor.spec)

    def __call__(self, batch: dict) -> dict:
        items = [Item.from_dict(json.loads(s)) for s in batch["item"]]
        records = label_items(self.predictor, self.writer, self.opts, items)
        for r in records:
            r["worker"] = {"pid": os.getpid(), "provider": self.predictor.provider}
        return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


def _options_dict(opts: LabelOptions) -> dict:
    d = asdict(opts)
    for k in ("input_dir", "out_dir", "model_dir", "gt_dir"):
        if d[k] is not None:
            d[k] = str(d[k])
    d["progress"] = False
    return d


def run_ray(plan: Plan, spec: ModelSpec, journal: Journal, opts: LabelOptions, stop: threading.Event) -> dict:
    try:
        import ray
        import ray.data
    except ImportError:
        raise LabelError("--engine ray needs Ray Data: pip install 'prnseg[ray]'") from None
    with ray_cluster():
        return _run_on_cluster(ray, plan, spec, journal, opts, stop)


@contextlib.contextmanager
def ray_cluster():
    """Ray for one run: the cluster ``RAY_ADDRESS`` names, or a local one shut down afterwards.
    A local cluster runs with Ray's token authentication (on by default since Ray 2.59, the floor
    of ``prnseg[ray]``): Ray's services listen on the machine's network interfaces and Ray offers
    no way to keep them on the loopback one, so the token is what keeps other hosts from running
    code on it. ``RAY_AUTH_MODE=disabled`` in the environment turns it off, at the user's word."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(include_dashboard=False, logging_level="warning", log_to_driver=True)
        yield ray
    finally:
        ray.shutdown()


def _run_on_cluster(ray, plan: Plan, spec: ModelSpec, journal: Journal, opts: LabelOptions,
                    stop: threading.Event) -> dict:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    use_gpu = gpus > 0 and opts.device != "cpu"
    if use_gpu:
        size, threads, device, num_gpus, num_cpus = gpus, None, "cuda", 1, 1
    else:
        size = max(1, min(2, cpus // 2))
        threads, device, num_gpus, num_cpus = max(1, cpus // size), "cpu", 0, max(1, cpus // size)
    batch = min(opts.batch or spec.max_batch, spec.max_batch)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"item": json.dumps(i.to_dict())} for i in plan.todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch, 4 * size)))
    ds = ds.map_batches(LabelActor, fn_constructor_kwargs={"options": _options_dict(opts), "threads": threads,
                                                           "device": device},
                        batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                        num_gpus=num_gpus, num_cpus=num_cpus)
    providers = set()
    t0 = time.perf_counter()
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for s in out["record"]:
            rec = json.loads(s)
            providers.add(rec.pop("worker")["provider"])
            if rec["status"] == "stopped":  # a worker's disk error: stop the whole run at once
                journal.halt(OSError(rec["errno"], rec["reason"], rec["file"]))
            else:
                journal.add(rec)
        if journal.halted is not None:
            break
        if opts.over_failure_limit(journal.n_failed):
            stop.set()
            break
    wall = time.perf_counter() - t0
    return {"backend": "ray", "provider": ", ".join(sorted(providers)), "device": device, "batch": batch,
            "actors": size, "gpus_per_actor": num_gpus, "wall_s": round(wall, 3)}
