"""EMA teacher for mean-teacher self-training (DAFormer/DACS semantics, reference quirks as flags).

The teacher is a frozen deep copy of the student whose parameters follow the student as an
exponential moving average with the ramp ``alpha_t = min(1 - 1/(t+1), alpha)``: a young student
changes fast, so early on the teacher tracks it closely (0.5 at t=1, 0.909 at t=10, 0.99 at
t=100) and only later averages over ~1/(1-alpha) steps.

Two reference behaviours are exposed as flags (defaults = the reference); the constructor takes
them as ``buffers`` and ``bn_mode``, the config as ``uda.ema_buffers`` and ``uda.teacher_bn_mode``:

``ema_buffers`` -- what happens to the teacher's buffers (BatchNorm running stats, ...):
    * ``"none"`` (reference): only parameters are averaged. The teacher's buffers are its own:
      they start as a copy of the student's at construction and afterwards change only through
      the teacher's own forward passes in train mode (with ``teacher_bn_mode="train"`` its BN
      running stats follow the target batches it labels).
    * ``"copy"``: buffers are copied from the student at every update.
    * ``"ema"``: floating-point buffers are averaged with the same ``alpha_t``; integer buffers
      (``num_batches_tracked``) are copied.

``teacher_bn_mode`` -- how BatchNorm behaves while the teacher makes pseudo-labels:
    * ``"train"`` (reference): the teacher stays in train mode, so BN normalises with the
      statistics of the (target) batch being labelled.
    * ``"eval"``: BN uses the running statistics. Those must come from the student
      (``ema_buffers="copy"`` or ``"ema"``); with ``"none"`` they would never be updated.

In both modes Dropout and DropPath are off while labelling (reference step 4), because
pseudo-labels should be the teacher's deterministic best guess.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn

from prnseg.errors import ConfigError

EMA_BUFFER_MODES = ("none", "copy", "ema")
TEACHER_BN_MODES = ("train", "eval")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module behind DDP/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def is_stochastic_depth_or_dropout(module: nn.Module) -> bool:
    """Dropout of any flavour, or a DropPath (stochastic depth) module.

    DropPath has no class in torch itself; implementations (timm's ``DropPath``, Hugging Face's
    ``SegformerDropPath``, ours) are recognised by the class name ending in ``DropPath``.
    """
    if isinstance(module, (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return True
    return type(module).__name__.endswith("DropPath")


def ema_alpha(step: int, alpha: float) -> float:
    """The reference ramp ``min(1 - 1/(step+1), alpha)``; 0 at step 0 (a plain copy)."""
    if step < 0:
        raise ValueError(f"EMA step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), alpha)


class EMATeacher:
    """A frozen EMA copy of a student network (DDP/compile wrappers are unwrapped).

    Keeps a reference to the student so ``update(step)`` needs nothing else. Not an ``nn.Module``
    on purpose: the teacher's parameters must never reach an optimiser or a DDP wrapper that
    iterates the trainer's modules. Call it like the module it wraps.
    """

    def __init__(
        self,
        student: nn.Module,
        alpha: float = 0.999,
        buffers: str = "none",
        bn_mode: str = "train",
    ):
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"EMA alpha must be in [0, 1), got {alpha}")
        if buffers not in EMA_BUFFER_MODES:
            raise ConfigError(f"ema_buffers must be one of {EMA_BUFFER_MODES}, got {buffers!r}")
        if bn_mode not in TEACHER_BN_MODES:
            raise ConfigError(f"teacher_bn_mode must be one of {TEACHER_BN_MODES}, got {bn_mode!r}")
        if bn_mode == "eval" and buffers == "none":
            raise ConfigError(
                "teacher_bn_mode='eval' needs ema_buffers='copy' or 'ema': with 'none' the "
                "teacher's BN running statistics are never updated"
            )
        self.alpha = float(alpha)
        self.buffers = buffers
        self.bn_mode = bn_mode
        self.student = unwrap_model(student)
        self.model = copy.deepcopy(self.student)
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.model.train()
        self.last_step: int | None = None

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def to(self, *args, **kwargs) -> "EMATeacher":
        self.model.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def update(self, step: int) -> float:
        """Move the teacher towards the student for iteration ``step``; returns the alpha used.

        Step 0 copies the parameters (alpha 0), as the reference does at its first iteration.
        """
        alpha_t = ema_alpha(step, self.alpha)
        student = self.student
        t_params = dict(self.model.named_parameters())
        s_params = dict(student.named_parameters())
        self._check_same_names(t_params, s_params, "parameters")
        pairs = [(t, s_params[name].detach()) for name, t in t_params.items()]
        if self.buffers != "none":
            t_bufs = dict(self.model.named_buffers())
            s_bufs = dict(student.named_buffers())
            self._check_same_names(t_bufs, s_bufs, "buffers")
            for name, t in t_bufs.items():
                s = s_bufs[name].detach()
                if self.buffers == "copy" or not t.is_floating_point():
                    t.copy_(s)
                else:
                    pairs.append((t, s))
        self._blend(pairs, alpha_t)
        self.last_step = step
        return alpha_t

    @staticmethod
    def _blend(pairs: list[tuple[torch.Tensor, torch.Tensor]], alpha_t: float) -> None:
        """teacher <- alpha_t * teacher + (1 - alpha_t) * student, batched with foreach kernels
        (hundreds of tensors in a MiT-B5) where dtypes and devices agree."""
        fast_t, fast_s = [], []
        for t, s in pairs:
            if alpha_t == 0.0 or not t.is_floating_point():
                t.copy_(s)
            elif s.dtype == t.dtype and s.device == t.device:
                fast_t.append(t)
                fast_s.append(s)
            else:
                t.lerp_(s.to(device=t.device, dtype=t.dtype), 1.0 - alpha_t)
        if fast_t:
            torch._foreach_lerp_(fast_t, fast_s, 1.0 - alpha_t)

    @staticmethod
    def _check_same_names(teacher: dict, student: dict, what: str) -> None:
        if teacher.keys() != student.keys():
            missing = sorted(set(teacher) ^ set(student))[:5]
            raise ValueError(f"EMA teacher and student {what} differ, e.g. {missing}")

    @contextlib.contextmanager
    def pseudo_label_mode(self) -> Iterator[nn.Module]:
        """Context for making pseudo-labels: no autograd, Dropout/DropPath off, BN per
        ``bn_mode``. Restores every submodule's training flag on exit."""
        saved = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.train(self.bn_mode == "train")
            for m in self.model.modules():
                if is_stochastic_depth_or_dropout(m):
                    m.training = False
            with torch.no_grad():
                yield self.model
        finally:
            for m, flag in saved:
                m.training = flag

    def state_dict(self) -> dict:
        """Teacher weights and the last EMA step (plain tensors/ints: loads with weights_only)."""
        return {
            "model": self.model.state_dict(),
            "last_step": -1 if self.last_step is None else int(self.last_step),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        last = int(state.get("last_step", -1))
        self.last_step = None if last < 0 else last
