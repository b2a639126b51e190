"""Peak memory of one real UDA training iteration (student + EMA teacher + PRN + optimiser).

On CUDA it reports ``torch.cuda.max_memory_allocated`` of real steps. On a CPU it reports the
parameter/optimiser-state bytes exactly and the activation peak measured by the CPU allocator
profiler for the same step, which is what the step would allocate on a GPU in fp32 (AMP lowers
the activation part). The paper target: MiT-B5, 512x512 crops, batch 2+2, with the PRN, fits a
24 GB GPU.

    python bench/train_memory.py --arch mit_b5 --crop 512 --batch 2 [--amp bf16] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; run on Linux or on a CUDA device")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so it measures from here on."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _return_free_memory() -> None:
    """Hand the first step's freed activations back to the OS (glibc keeps them mapped), so the
    measured step's peak-RSS rise counts its own allocations rather than reusing that cache."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the rise is then a lower bound
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mit_b5")
    ap.add_argument("--head", default="daformer")
    ap.add_argument("--mode", default="prn", choices=("source_only", "self_training", "prn"))
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "none"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from prnseg.training.config import load_config
    from prnseg.training.trainer import UDATrainer

    cfg = load_config("gta2cityscapes", {"model.arch": args.arch, "model.head": args.head, "uda.mode": args.mode,
                                         "train.batch_size": args.batch, "train.amp": args.amp,
                                         "train.device": args.device, "prn.start_iter": 0})
    trainer = UDATrainer(cfg, "/dev/null", progress=False)
    dev = trainer.device
    b, c = args.batch, args.crop
    gen = torch.Generator().manual_seed(0)

    def batch():
        return {"source": {"img": torch.randn(b, 3, c, c, generator=gen),
                           "gt": torch.randint(0, 19, (b, c, c), generator=gen)},
                "target": {"img": torch.randn(b, 3, c, c, generator=gen)}}

    nets = [trainer.student, trainer.prn, trainer.proj, trainer.teacher.model if trainer.teacher else None]
    n_params = sum(p.numel() for n in nets if n is not None for p in n.parameters())
    trainable = sum(p.numel() for n in nets[:3] if n is not None for p in n.parameters())
    # student/PRN/proj weights + grads + 2 AdamW moments; teacher weights only
    static_bytes = 4 * (n_params + trainable * 3)
    result = {"arch": args.arch, "head": args.head, "mode": args.mode, "crop": c, "batch": f"{b}+{b}",
              "device": str(dev), "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "none",
              "parameters_all_networks": n_params, "static_mb": static_bytes / 2**20, "machine": platform.processor()}
    t0 = time.perf_counter()
    if dev.type == "cuda":
        trainer.train_step(batch())
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps):
            trainer.train_step(batch())
        torch.cuda.synchronize()
        result["peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
        result["measured"] = "cuda max_memory_allocated over real steps"
    else:
        trainer.train_step(batch())  # creates the optimiser state, so the measured step is steady
        inputs = batch()
        _return_free_memory()
        base = _rss_kb("VmRSS")
        _reset_peak_rss()
        trainer.train_step(inputs)
        peak = (_rss_kb("VmHWM") - base) * 1024
        result["activation_peak_mb"] = peak / 2**20
        result["estimated_gpu_fp32_mb"] = result["static_mb"] + result["activation_peak_mb"]
        result["measured"] = ("CPU: static bytes counted exactly + the peak-RSS rise of one steady step "
                              "(Linux VmHWM after a reset); an estimate of the fp32 GPU footprint")
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
