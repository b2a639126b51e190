"""The UDA training loop: it builds the parts and orchestrates one iteration; each loss, the EMA
teacher, the augmentations and the PRN's step (its losses and pseudo-labels: prn_step.py) live
in their own modules.

Modes (``uda.mode``):
- ``source_only``: supervised on source, the lower bound;
- ``self_training``: DAFormer-style EMA teacher + ClassMix pseudo-label self-training, no PRN;
- ``prn``: the full method: the PRN, trained on FFT-perturbed source logits, refines the
  teacher's target pseudo-labels and masks out the pixels it predicts to be noisy; plus the
  pixel contrastive loss.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from prnseg.errors import ConfigError, PrnsegError
from prnseg.training import distributed as dist_utils
from prnseg.training.augment import strong_transform
from prnseg.training.class_prior import TargetClassMarginal
from prnseg.training.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from prnseg.training.config import Config, resume_mismatches, save_config
from prnseg.training.data.uda import ResumableSampler
from prnseg.training.ema import EMATeacher
from prnseg.training.loading import load_checkpoint_model
from prnseg.training.losses import (
    ProjectionHead,
    crop_pseudo_margins,
    feature_distance_loss,
    pixel_contrastive_loss,
    pseudo_label_weight,
    seg_ce_loss,
)
from prnseg.training.mic import MaskingConsistency
from prnseg.training.models.encoder import MiTEncoder
from prnseg.training.models.factory import create_model_from_config, create_prn_from_config
from prnseg.training.prn_step import PRNBatch, PRNStep, PseudoLabels
from prnseg.training.schedule import lr_factor
from prnseg.training.tta import tta_probabilities


def autocast_dtype(spec: str, device: torch.device):
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); no autocast on CPU."""
    if spec == "none" or (spec == "auto" and device.type != "cuda"):
        return None
    if spec == "bf16" or (spec == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def cycle_batches(loader):
    while True:
        yield from loader


@dataclass
class StepResult:
    """Loss terms stay device tensors until logged, so a CUDA step never waits on the host."""
    losses: dict
    lr: float

    def scalars(self, step: int, checkpoint: Path | None = None) -> dict[str, float]:
        """The loss terms as floats; a non-finite one stops the run before anything is saved, so
        ``checkpoint`` keeps the last good weights (the optimiser has already stepped on the bad ones)."""
        values = {k: float(v) for k, v in self.losses.items()}
        for k, v in values.items():
            if not math.isfinite(v):
                kept = f"; {checkpoint} keeps the last good checkpoint" if checkpoint and checkpoint.exists() else ""
                raise PrnsegError(f"loss '{k}' is {v} at iteration {step}, so the run stopped without saving it{kept}; "
                                  "lower optim.lr or use train.amp=none, then continue with --resume")
        return values


class UDATrainer:
    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.device = dist_utils.select_device(cfg.train.device)
        self.distributed = dist_utils.init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.mode = cfg.uda.mode
        self.prn_step = PRNStep.from_config(cfg)
        init_seed = cfg.train.init_seed if cfg.train.init_seed >= 0 else cfg.train.seed
        self._seed_everything(init_seed)

        self.student = create_model_from_config(cfg.model).to(self.device)
        self.prn = None
        self.proj = None
        if self.mode == "prn":
            self.prn = create_prn_from_config(self.student, cfg.prn).to(self.device)
            if cfg.uda.contrastive.enabled:
                self.proj = ProjectionHead(self.student.decode_head.channels,
                                           cfg.uda.contrastive.proj_channels).to(self.device)
        if init_seed != cfg.train.seed:  # the weights are drawn; the rest of the run follows train.seed
            self._seed_everything(cfg.train.seed)
        from prnseg.training.data.builder import build_labeled_target, split_labeled_target

        self.labeled_target = build_labeled_target(cfg)
        if cfg.data.target_labeled.prn_fraction > 0 and self.labeled_target is not None and self.mode != "prn":
            raise ConfigError(f"data.target_labeled.prn_fraction={cfg.data.target_labeled.prn_fraction:g} keeps "
                              f"images for the PRN, which uda.mode={self.mode} has not; use uda.mode=prn or 0")
        # the student's labelled images and the PRN's: one set unless prn_fraction splits them
        self.labeled_student, self.labeled_prn = split_labeled_target(self.labeled_target,
                                                                      cfg.data.target_labeled.prn_fraction)
        self.mic = None
        if cfg.uda.mic.enabled and self.mode != "source_only":
            u = cfg.uda
            self.mic = MaskingConsistency(u.mic.block_size, u.mic.mask_ratio, u.jitter_strength, u.jitter_apply_prob,
                                          u.blur_apply_prob, u.ce_reduction)
        self.imnet = None
        if cfg.uda.feature_distance.enabled:
            if not cfg.model.pretrained:
                raise ConfigError("uda.feature_distance needs ImageNet weights: set model.pretrained "
                                  "(a Hugging Face-format MiT directory or hub id)")
            # a frozen copy of the ImageNet encoder, the anchor the student's features are pulled to
            self.imnet = MiTEncoder(cfg.model.arch, pretrained=cfg.model.pretrained).to(self.device).eval()
            self.imnet.requires_grad_(False)
        if cfg.train.init_from and not resume:
            self._init_student_from(cfg.train.init_from)
        self.teacher = None
        if self.mode != "source_only":
            self.teacher = EMATeacher(self.student, alpha=cfg.uda.ema_alpha, buffers=cfg.uda.ema_buffers,
                                      bn_mode=cfg.uda.teacher_bn_mode)
        self.optimizer = self._build_optimizer()
        self.step = 0
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 1000 * dist_utils.rank())
        # tracked whenever there is a teacher: its pseudo-labels use it at uda.pseudo_label_logit_adjustment
        # > 0, and the export records it for prnseg label --tta (model.json class_prior)
        self.class_marginal = None
        if self.teacher is not None:
            self.class_marginal = TargetClassMarginal(cfg.model.num_classes, cfg.uda.pseudo_label_prior_momentum)

        self.student_ddp, self.prn_ddp, self.proj_ddp = self.student, self.prn, self.proj
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel
            self.student_ddp = ddp(self.student, device_ids=ids)
            if self.prn is not None:
                self.prn_ddp = ddp(self.prn, device_ids=ids)
            if self.proj is not None:
                self.proj_ddp = ddp(self.proj, device_ids=ids)

        if resume:
            self._resume()

    # ------------------------------------------------------------------ setup
    def _seed_everything(self, seed: int) -> None:
        seed = seed + dist_utils.rank()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _init_student_from(self, path: str) -> None:
        """Warm start: the checkpoint's student weights. Building its model draws initial weights
        from the global RNG, which is restored after, so a warm-started run stays reproducible."""
        with torch.random.fork_rng(devices=[]):
            student = load_checkpoint_model(path, "student").segmentor
        try:
            self.student.load_state_dict(student.state_dict())
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path}: train.init_from weights do not fit {self.cfg.model.arch}/"
                                  f"{self.cfg.model.head}: {first[:160]}") from None

    def _build_optimizer(self):
        cfg = self.cfg.optim
        groups = self.student.param_groups(cfg.lr, head_lr_mult=cfg.head_lr_mult, weight_decay=cfg.weight_decay)
        for extra in (self.prn, self.proj):
            if extra is not None:  # the PRN and projection head join the head parameter group
                groups.append({"params": list(extra.parameters()), "lr": cfg.lr * cfg.head_lr_mult,
                               "weight_decay": cfg.weight_decay})
        for g in groups:
            g["initial_lr"] = g["lr"]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def _set_lr(self) -> float:
        o = self.cfg.optim
        min_factor = o.min_lr / o.lr if o.lr > 0 else 0.0
        f = lr_factor(self.step, self.cfg.train.iters, o.warmup_iters, o.warmup_ratio, o.poly_power, min_factor)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return self.optimizer.param_groups[0]["lr"]

    def build_loader(self) -> DataLoader:
        from prnseg.training.data.builder import build_uda_dataset

        dataset = build_uda_dataset(self.cfg, with_target=self.mode != "source_only",
                                    progress=self.progress and dist_utils.is_main())
        sampler = ResumableSampler(len(dataset), self.cfg.train.seed, start=self.step * self.cfg.train.batch_size,
                                   rank=dist_utils.rank(), world_size=dist_utils.world_size())
        return DataLoader(dataset, batch_size=self.cfg.train.batch_size, sampler=sampler,
                          num_workers=self.cfg.data.workers, pin_memory=self.device.type == "cuda",
                          drop_last=True, persistent_workers=self.cfg.data.workers > 0,
                          # its own generator: creating the iterator must not advance the global
                          # RNG, or a resumed run's dropout would drift from the uninterrupted one
                          generator=torch.Generator().manual_seed(self.cfg.train.seed))

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "meta": {"arch": self.cfg.model.arch, "head": self.cfg.model.head, "mode": self.mode,
                     "num_classes": self.cfg.model.num_classes},
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.prn is not None:
            state["prn"] = self.prn.state_dict()
        if self.proj is not None:
            state["proj"] = self.proj.state_dict()
        if self.class_marginal is not None:
            state["class_marginal"] = self.class_marginal.state_dict()
        return state

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.exists():
            raise PrnsegError(f"{path}: nothing to resume from; run without --resume to start")
        state = load_checkpoint(path, map_location=self.device)
        saved = state["config"]
        current, default = self.cfg.to_dict(), Config().to_dict()
        for key in ("model", "prn", "uda"):
            diff = resume_mismatches(saved.get(key, {}), current[key], default[key], f"{key}.")
            if diff:
                raise PrnsegError(f"{path}: saved with a different '{key}' config ({'; '.join(diff)}); resume "
                                  "with the same config and --set overrides, or start a new --out folder")
        self.student.load_state_dict(state["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.prn is not None:
            self.prn.load_state_dict(state["prn"])
        if self.proj is not None:
            self.proj.load_state_dict(state["proj"])
        if self.class_marginal is not None:
            self.class_marginal.load_state_dict(state.get("class_marginal", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])

    def check_replicas_in_sync(self) -> None:
        """Under DDP every rank must hold the same student, teacher and PRN (gradients are
        all-reduced and the EMA update is deterministic); compare parameter checksums."""
        if not self.distributed:
            return
        nets = [self.student, self.teacher.model if self.teacher else None, self.prn]
        local = torch.stack([sum(p.detach().double().sum() for p in n.parameters()) if n is not None
                             else torch.zeros((), dtype=torch.float64) for n in nets]).to(self.device)
        summed = dist_utils.all_reduce_sum_(local.clone())
        if not torch.allclose(summed / dist_utils.world_size(), local, rtol=1e-9, atol=1e-6):
            raise PrnsegError(f"DDP replicas diverged at iteration {self.step} (student, teacher, PRN checksums "
                              f"{local.tolist()} vs mean {(summed / dist_utils.world_size()).tolist()})")

    def save(self, name: str = "last.pt") -> Path:
        path = self.out / name
        self.check_replicas_in_sync()
        if dist_utils.is_main():
            save_checkpoint(self.state_dict(), path)
        return path

    # ------------------------------------------------------------------- step
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _contrastive(self, decoder_features, labels, valid) -> torch.Tensor:
        c = self.cfg.uda.contrastive
        return pixel_contrastive_loss(self.proj_ddp(decoder_features), labels, valid, temperature=c.temperature,
                                      max_anchors_per_class=c.max_anchors_per_class, max_samples=c.max_samples,
                                      generator=self.generator)

    def _labeled_batch(self, ds, salt: int = 0x1ab):
        """(images, labels) of ``train.batch_size`` hand-labelled target images of ``ds`` for this
        step, on the device, or None. Drawn from (seed, salt, step) alone, so a resumed run draws what
        the uninterrupted one did."""
        if ds is None:
            return None
        rng = np.random.default_rng([self.cfg.train.seed, salt, self.step, dist_utils.rank()])
        items = [ds.get(int(i), rng) for i in rng.integers(len(ds), size=self.cfg.train.batch_size)]
        return tuple(torch.stack([it[k] for it in items]).to(self.device, non_blocking=True) for k in ("img", "gt"))

    def train_step(self, batch: dict) -> StepResult:
        """One iteration: each part adds its gradients (under DDP only the student's last backward
        of the step all-reduces them) and its log terms, then the optimiser steps once."""
        lr = self._set_lr()
        self.student.train()
        if self.teacher is not None:
            self.teacher.update(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        x_s = batch["source"]["img"].to(self.device, non_blocking=True)
        y_s = batch["source"]["gt"].to(self.device, non_blocking=True)
        labeled = self._labeled_batch(self.labeled_student)
        prn_labeled = (labeled if self.labeled_prn is self.labeled_student
                       else self._labeled_batch(self.labeled_prn, salt=0x1ac))
        log: dict[str, torch.Tensor] = {}
        self._source_part(x_s, y_s, labeled, log)
        if self.mode != "source_only":
            x_t = batch["target"]["img"].to(self.device, non_blocking=True)
            t_s, t_t, pseudo, conf = self._teacher_part(x_s, x_t)
            noise_mask = None
            if self.mode == "prn":
                pseudo, conf, noise_mask = self._prn_part(x_s, y_s, x_t, t_s, t_t, prn_labeled, pseudo, conf, log)
            self._target_part(x_s, y_s, x_t, pseudo, conf, noise_mask, labeled, log)
        if labeled is not None:
            self._labeled_part(*labeled, log)
        self._optimiser_part()
        self.step += 1
        return StepResult(losses=log, lr=lr)

    def _sync_after(self, part: str, labeled) -> AbstractContextManager:
        """No gradient all-reduce after ``part`` when a later part of the step still backpropagates
        through the student: DDP must synchronise once, on the student's last backward."""
        later = {"source": self.mode != "source_only" or labeled is not None,
                 "target": self.mic is not None or labeled is not None, "mic": labeled is not None}
        return dist_utils.no_sync(self.student_ddp) if later[part] else nullcontext()

    def _source_part(self, x_s, y_s, labeled, log: dict) -> None:
        """Supervised source CE, plus the ImageNet feature distance and the source contrastive term."""
        uda, w = self.cfg.uda, self.cfg.uda.loss_weights
        with self._sync_after("source", labeled):
            with self._autocast():
                out_s = self.student_ddp(x_s)
                loss_src = w.source * seg_ce_loss(out_s.logits, y_s, reduction_mode=uda.ce_reduction)
                loss = loss_src
                if self.imnet is not None:
                    fdc = uda.feature_distance
                    with torch.no_grad():
                        imnet_feat = self.imnet(x_s)[-1]
                    loss_fd = feature_distance_loss(out_s.features[-1], imnet_feat, y_s, fdc.classes,
                                                    fdc.scale_min_ratio)
                    loss = loss + w.feature_distance * loss_fd
                    log["feature_distance"] = loss_fd.detach()
                if self.proj is not None:
                    loss_con_s = self._contrastive(out_s.decoder_features, y_s, y_s != 255)
                    loss = loss + w.contrastive * loss_con_s
                    log["contrast_src"] = loss_con_s.detach()
            self._backward(loss)
        log["source"] = loss_src.detach()

    def _teacher_part(self, x_s, x_t):
        """The teacher on the un-augmented target (and, for the PRN, the source) images: its outputs
        and its own target pseudo-labels (label, confidence) at the crop size."""
        with torch.no_grad(), self.teacher.pseudo_label_mode(), self._autocast():
            t_t = self.teacher.model(x_t)
            t_s = self.teacher.model(x_s) if self.mode == "prn" else None
        if self.cfg.uda.pseudo_label_tta:
            probs = tta_probabilities(self._teacher_logits, x_t)
        else:
            probs = torch.softmax(F.interpolate(t_t.logits.float(), size=x_t.shape[-2:], mode="bilinear",
                                                align_corners=False), 1)
        if self.class_marginal is not None:
            self.class_marginal.update(probs)
            if self.cfg.uda.pseudo_label_logit_adjustment:
                probs = self.class_marginal.adjust(probs, self.cfg.uda.pseudo_label_logit_adjustment)
        conf, pseudo = probs.max(1)
        return t_s, t_t, pseudo, conf

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.teacher.pseudo_label_mode():
            return self.teacher.model(x).logits.float()

    def _prn_part(self, x_s, y_s, x_t, t_s, t_t, labeled, pseudo, conf, log: dict):
        """Train the PRN (its losses: :class:`PRNStep`), then, from ``prn.start_iter`` on, let it
        rewrite the target pseudo-labels and mask the pixels it finds noisy: (pseudo, conf, mask)."""
        logits_t = t_t.logits.float()
        source = PRNBatch(t_s.features, self.prn_step.perturb(t_s.logits.float(), logits_t, self.generator), y_s)
        lab = None
        if labeled is not None:
            with torch.no_grad(), self.teacher.pseudo_label_mode(), self._autocast():
                t_l = self.teacher.model(labeled[0])
            lab = PRNBatch(t_l.features, t_l.logits.float(), labeled[1])
        with self._autocast():
            prn_out = self.prn_step.losses(self.prn_ddp, source, target=PRNBatch(t_t.features, logits_t),
                                           target_images=x_t, teacher=self._teacher_logits, labeled=lab,
                                           generator=self.generator)
        self._backward(prn_out.loss)
        log.update(prn_out.terms)
        log["noisy_frac"] = torch.zeros((), device=self.device)
        log["relabelled_frac"] = torch.zeros((), device=self.device)
        if self.step < self.cfg.prn.start_iter:
            return pseudo, conf, None
        written = self.prn_pseudo_labels(t_t.features, logits_t, x_t.shape[-2:], prn_out.target)
        if self.prn_step.use_refined_labels:
            pseudo, conf = written.label, written.confidence
            log["relabelled_frac"] = written.replaced.float().mean()
        log["noisy_frac"] = written.noise.float().mean()
        return pseudo, conf, written.noise

    def prn_pseudo_labels(self, features, logits, size, prn_outputs=None) -> PseudoLabels:
        """The target pseudo-labels and noise mask the student learns from, at crop ``size``: the
        PRN step on the teacher's (features, logits), or on PRN outputs the losses already computed
        (``target_consistency``). ``prn.pseudo_label_bn`` says which BatchNorm statistics the PRN
        uses here: the batch's ("batch", training mode) or its running ones ("running", as evaluation
        and the exported graph), in which case the losses' outputs are not reused."""
        running = self.cfg.prn.pseudo_label_bn == "running"
        if prn_outputs is None or running:
            prn = dist_utils.unwrap(self.prn_ddp)
            with torch.no_grad(), self._autocast(), PRNStep.bn_statistics(prn, running):
                prn_outputs = self.prn_step.run(prn, features, logits)
        return self.prn_step.pseudo_labels(
            logits, *prn_outputs, resize=lambda t: F.interpolate(t.float(), size=size, mode="bilinear",
                                                                   align_corners=False))

    def _target_part(self, x_s, y_s, x_t, pseudo, conf, noise_mask, labeled, log: dict) -> None:
        """ClassMix + colour jitter + blur, then the confidence-weighted target CE (noisy pixels
        weight 0), the target contrastive term and MIC on the same pseudo-labels and weights."""
        uda, w = self.cfg.uda, self.cfg.uda.loss_weights
        weight = pseudo_label_weight(conf, threshold=uda.pseudo_threshold, mode=uda.pseudo_weight_mode)
        if noise_mask is not None:
            weight = weight * (~noise_mask).float()
        top, bottom, left, right = uda.pseudo_margins
        weight = crop_pseudo_margins(weight, top=top, bottom=bottom, left=left, right=right)
        log["pseudo_weight"] = weight.mean().detach()
        mixed_img, mixed_lbl, mixed_w = strong_transform(
            x_s, x_t, y_s, pseudo, weight, classmix_scope=uda.classmix_scope,
            jitter_strength=uda.jitter_strength, jitter_apply_prob=uda.jitter_apply_prob,
            blur_apply_prob=uda.blur_apply_prob, generator=self.generator)
        with self._sync_after("target", labeled):
            with self._autocast():
                out_m = self.student_ddp(mixed_img)
                loss_tgt = w.target * seg_ce_loss(out_m.logits, mixed_lbl, weight=mixed_w,
                                                  reduction_mode=uda.ce_reduction)
                loss = loss_tgt
                if self.proj is not None:  # source GT and refined target labels; noisy pixels (weight 0) left out
                    loss_con_t = self._contrastive(out_m.decoder_features, mixed_lbl,
                                                   (mixed_lbl != 255) & (mixed_w > 0))
                    loss = loss + w.contrastive * loss_con_t
                    log["contrast_tgt"] = loss_con_t.detach()
            self._backward(loss)
        log["target"] = loss_tgt.detach()
        if self.mic is not None:
            with self._sync_after("mic", labeled):
                with self._autocast():
                    loss_mic = w.mic * self.mic.loss(self.student_ddp, x_t, pseudo, weight, self.generator)
                self._backward(loss_mic)
            log["mic"] = loss_mic.detach()

    def _labeled_part(self, x_l, y_l, log: dict) -> None:
        """The hand-labelled target images, supervised."""
        with self._autocast():
            out_l = self.student_ddp(x_l)
            loss = self.cfg.uda.loss_weights.target_labeled * seg_ce_loss(out_l.logits, y_l,
                                                                             reduction_mode=self.cfg.uda.ce_reduction)
        self._backward(loss)
        log["target_labeled"] = loss.detach()

    def _optimiser_part(self) -> None:
        """Clip (after unscaling fp16 gradients) and step; the scaler skips a step with inf gradients."""
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # ------------------------------------------------------------------- loop
    def fit(self) -> Path:
        from tqdm import tqdm

        from prnseg.training.evaluate import evaluate_checkpoint_models

        cfg = self.cfg
        main = dist_utils.is_main()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.pt.*.tmp"):  # a write cut short by a kill; last.pt is intact
                stale.unlink()
            save_config(cfg, self.out / "config.yaml")
            self._trim_logs()
        if self.step >= cfg.train.iters:
            if main:
                print(f"{self.out / 'last.pt'} already holds iteration {self.step} of {cfg.train.iters}; nothing to do")
            return self.out / "last.pt"
        loader = self.build_loader()
        batches = cycle_batches(loader)
        csv_path = self.out / "metrics.csv"
        bar = tqdm(total=cfg.train.iters, initial=self.step, desc=f"train {self.mode}", unit="it",
                   disable=not (self.progress and main), dynamic_ncols=True)
        fields = None
        t0, step0 = time.perf_counter(), self.step
        step_seconds: list[float] = []
        try:
            while self.step < cfg.train.iters:
                batch = next(batches)
                t_step = time.perf_counter()
                result = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                step_seconds.append(time.perf_counter() - t_step)
                bar.update(1)
                losses = result.scalars(self.step, self.out / "last.pt")  # every step, before any checkpoint
                if main and (self.step % cfg.train.log_every == 0 or self.step == cfg.train.iters):
                    row = {"step": self.step, "lr": result.lr, **{k: round(v, 5) for k, v in losses.items()},
                           "sec_per_it": round((time.perf_counter() - t0) / max(self.step - step0, 1), 4)}
                    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()
                                     if k in ("source", "target", "prn_ref", "prn_noise")})
                    if fields is None:
                        fields = list(row)
                        new = not csv_path.exists()
                        with open(csv_path, "a", newline="") as f:
                            if new:
                                csv.writer(f).writerow(fields)
                    with open(csv_path, "a", newline="") as f:
                        csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(row)
                if self.step % cfg.train.checkpoint_every == 0 or self.step == cfg.train.iters:
                    self.save()
                if cfg.train.eval_every > 0 and self.step % cfg.train.eval_every == 0 and main:
                    metrics = evaluate_checkpoint_models(self, progress=False)
                    bar.write(f"[iter {self.step}] target val mIoU {100 * metrics['miou']:.2f}")
                    with open(self.out / "eval.jsonl", "a") as f:
                        f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        finally:
            bar.close()
        if main:
            self._write_summary(step_seconds)
        dist_utils.barrier()
        return self.out / "last.pt"

    def _trim_logs(self) -> None:
        """Drop log rows after the step this run starts from: a resumed run logs those steps again
        (from the checkpoint's state), so each step appears once in metrics.csv and eval.jsonl."""
        from prnseg.atomic import atomic_write_bytes

        def step_of(line: str, csv_row: bool) -> int | None:
            try:
                return int(line.split(",", 1)[0]) if csv_row else int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                return None  # a line torn by a kill

        for name, csv_rows in (("metrics.csv", True), ("eval.jsonl", False)):
            path = self.out / name
            if not path.is_file():
                continue
            if self.step == 0:  # a fresh run in this folder: its checkpoint is replaced, so are its logs
                path.unlink()
                continue
            lines = path.read_text().splitlines(keepends=True)
            head = lines[:1] if csv_rows else []
            body = lines[len(head):]
            keep = [ln for ln in body if ln.endswith("\n") and (step_of(ln, csv_rows) or self.step + 1) <= self.step]
            if keep != body:
                atomic_write_bytes(path, "".join(head + keep).encode())

    def _write_summary(self, step_seconds: list[float]) -> None:
        """Speed and memory of this run, for benchmarks: the median step time skips warm-up noise."""
        import resource

        from prnseg.atomic import atomic_write_bytes

        summary = {
            "mode": self.mode, "step": self.step, "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "none",
            "median_step_seconds": float(np.median(step_seconds)) if step_seconds else None,
            "steps_timed": len(step_seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if self.device.type == "cuda":
            summary["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        atomic_write_bytes(self.out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
