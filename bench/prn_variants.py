"""Which PRN training signal transfers to the target? Train only a PRN on a frozen teacher.

Holds a trained checkpoint's EMA teacher fixed and trains a fresh PRN for ``--iters`` steps with
each variant of its training input, then scores raw vs refined pseudo-labels and the noise
head's AUROC on the labelled target val split (the same metrics as ``prnseg eval``):

- ``full``: the method: teacher features + FFT-perturbed source logits (target low-frequency
  amplitude);
- ``logits_only``: the same logits, features zeroed: tests whether the source features are
  what fails to transfer;
- ``fda``: the source *image* first takes a target image's low-frequency amplitude (FDA,
  window 0.01-0.09), so the features the PRN sees look target-like;
- ``no_perturb``: plain source logits: the PRN only ever sees the teacher's own source errors;
- ``feature_fft``: the method, and every encoder feature map also takes the target features'
  low-frequency amplitude (the same window as its logits), so the PRN cannot lean on source
  features that are cleaner than any target feature will be;
- ``prior_residual``: the method, with the noise logit predicted as a residual on the max-softmax
  detector's logit, ``log((1 - p_max) / p_max)``, its head starting at zero: the PRN starts as
  the confidence baseline and learns only corrections to it;
- ``target_consistency``: the noise head learns on *target* images instead, where a pixel counts
  as noisy when the teacher's label changes under a flip, colour jitter and blur of the image (a
  label-free proxy of its errors); the refine head still learns from the source;
- ``prototype``: a label-free signal from the target itself (ProDA's prototypical rectification):
  class prototypes are the mean teacher decoder features of confident target pixels; each target
  pixel's label is rectified by weighting the teacher's class probabilities with its feature's
  softmax similarity to every prototype. The PRN learns, on *target* images, to predict the
  rectified label (refine head) and where it differs from the teacher's (noise head). The score
  also reports how good the rectified labels themselves are (``rectified_miou``): a PRN taught by
  them cannot do better than they are;
- ``tta``: a label-free signal from the target itself (multi-scale and mirror test-time
  augmentation, the field's standard way to make better pseudo-labels offline): each target crop's
  label is the argmax of the teacher's class probabilities averaged over scales 0.75, 1, 1.25 and
  their mirrors. The PRN learns, on *target* images and from the teacher's single-pass logits and
  features, to predict that label (refine head) and where it differs from the teacher's own (noise
  head): one pass that distils six. ``tta_miou`` scores the averaged labels themselves;
- ``target_labels``: an upper bound, not a UDA signal: the PRN learns from the teacher's
  unperturbed logits on the *target train* images and their labels, which training never reads.
  It shows the most this PRN can add on top of this teacher, whatever signal teaches it. With
  ``--target-list FILE`` (``suggest.txt`` of ``prnseg label --suggest``) only the images it names
  are read: what K hand-labelled images teach a PRN whose teacher never trained on them.

Variants combine with ``+``: ``logits_only+no_perturb+prior_residual`` is a noise head that sees
only the class probabilities, learns from the teacher's real source errors, and starts as the
max-softmax detector.

    python bench/prn_variants.py --checkpoint runs/prn/last.pt --data data/synth \\
        --variants full logits_only fda --iters 300 --val-images 40 --json prn_variants.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from prnseg.training.data.builder import build_eval_dataset, build_uda_dataset, val_dataset_config
from prnseg.training.data.transforms import build_test_pipeline
from prnseg.training.data.uda import ResumableSampler
from prnseg.training.evaluate import evaluate_pseudo_labels
from prnseg.training.fft_perturb import fft_perturb_logits, sample_eps
from prnseg.training.loading import load_checkpoint_model
from prnseg.training.models.factory import create_prn
from prnseg.training.prn_step import PRNBatch, PRNStep
from prnseg.training.tta import tta_probabilities as _tta

VARIANTS = ("full", "logits_only", "fda", "no_perturb", "feature_fft", "prior_residual", "target_consistency",
            "prototype", "tta", "target_labels")
PROTOTYPE_MIN_CONFIDENCE = 0.9      # pixels that build the prototypes
PROTOTYPE_TEMPERATURE = 0.1         # of the cosine similarity to the prototypes


class _FeatureGate(torch.nn.Module):
    """Feeds the PRN zeros instead of features for ``logits_only`` (the same at train and test)."""

    def __init__(self, prn, use_features: bool):
        super().__init__()
        self.prn, self.use_features = prn, use_features

    def forward(self, features, logits):
        return self.prn([f if self.use_features else torch.zeros_like(f) for f in features], logits)


class _PriorResidual(torch.nn.Module):
    """Adds the max-softmax detector's logit to the PRN's noise logit (head zero-initialised)."""

    def __init__(self, prn):
        super().__init__()
        self.prn = prn
        torch.nn.init.zeros_(prn.prn.noise_head.weight)
        torch.nn.init.zeros_(prn.prn.noise_head.bias)

    def forward(self, features, logits):
        refined, noise = self.prn(features, logits)
        z = torch.nn.functional.interpolate(logits, size=noise.shape[-2:], mode="bilinear", align_corners=False)
        p_max = torch.softmax(z.float(), 1).amax(1, keepdim=True).clamp(1e-6, 1 - 1e-6)
        return refined, noise + torch.log((1 - p_max) / p_max)


def variant_parts(name: str) -> set[str]:
    """The parts of a ``+``-joined variant name; ``full`` is the method with no change."""
    parts = set(name.split("+"))
    unknown = parts - set(VARIANTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant part(s) {', '.join(sorted(unknown))}; "
                                         f"choose from {', '.join(VARIANTS)}, joined with '+'")
    return parts - {"full"}


def training_step(cfg, parts: set[str]) -> PRNStep:
    """The trainer's PRN step for ``cfg`` (losses, weights, reductions), learning the noise head from
    target consistency, or both heads from the augmented teacher (``target_tta``), when the variant
    says so, so a variant measures what training would do."""
    if "tta" in parts:
        return replace(PRNStep.from_config(cfg), refine_signal="target_tta", noise_signal="target_tta")
    signal = "target_consistency" if "target_consistency" in parts else "source_fft"
    return replace(PRNStep.from_config(cfg), noise_signal=signal)


def scoring_step(cfg, refine_min_confidence: float = 0.0) -> PRNStep:
    """The step variants are scored with: the refined label wherever the PRN's top probability
    reaches ``refine_min_confidence`` (default 0: the PRN's own argmax, what a signal taught it)."""
    return replace(PRNStep.from_config(cfg), use_refined_labels=True, refine_min_confidence=refine_min_confidence)


def class_prototypes(teacher, batches, n_batches: int, num_classes: int) -> torch.Tensor:
    """C x D mean decoder features of the target pixels the teacher labels with confidence >=
    ``PROTOTYPE_MIN_CONFIDENCE`` (a class with no such pixel gets the mean of all of them)."""
    sums, counts = None, torch.zeros(num_classes)
    with torch.no_grad():
        for _, batch in zip(range(n_batches), batches):
            out = teacher(batch["target"]["img"])
            f = torch.nn.functional.normalize(out.decoder_features.float(), dim=1)
            conf, lab = torch.softmax(out.logits.float(), 1).max(1)
            keep = conf >= PROTOTYPE_MIN_CONFIDENCE
            fl, ll = f.permute(0, 2, 3, 1)[keep], lab[keep]
            if sums is None:
                sums = torch.zeros(num_classes, f.shape[1])
            sums.index_add_(0, ll, fl)
            counts += torch.bincount(ll, minlength=num_classes).float()
    protos = sums / counts.clamp(min=1)[:, None]
    protos[counts == 0] = sums.sum(0) / counts.sum().clamp(min=1)
    return torch.nn.functional.normalize(protos, dim=1)


def rectified_logits(out, protos: torch.Tensor) -> torch.Tensor:
    """ProDA's rectification at stride 4: log(p * w), w = softmax(cos(feature, prototypes) / T)."""
    f = torch.nn.functional.normalize(out.decoder_features.float(), dim=1)
    w = torch.softmax(torch.einsum("bdhw,cd->bchw", f, protos) / PROTOTYPE_TEMPERATURE, 1)
    return torch.log_softmax(out.logits.float(), 1) + torch.log(w.clamp_min(1e-12))


def tta_probabilities(teacher, x: torch.Tensor) -> torch.Tensor:
    """The teacher's class probabilities for ``x`` averaged over scales and mirrors (training/tta.py)."""
    return _tta(lambda inp: teacher(inp).logits, x)


def train_variant(variant, teacher, cfg, iters, seed, lr, target_list=None):
    parts = variant_parts(variant)
    torch.manual_seed(seed)
    prn = _FeatureGate(create_prn(teacher, channels=cfg.prn.channels, num_blocks=cfg.prn.num_blocks),
                       "logits_only" not in parts)
    step = training_step(cfg, parts)
    if "prior_residual" in parts:
        prn = _PriorResidual(prn)
    ds = build_uda_dataset(cfg)
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, sampler=ResumableSampler(len(ds), seed),
                        num_workers=0, drop_last=True)
    opt = torch.optim.AdamW(prn.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    batches = iter(loader)
    labelled_target = _labelled_target_batches(cfg, seed, target_list) if "target_labels" in parts else None
    protos = class_prototypes(teacher, iter(loader), 50, teacher.num_classes) if "prototype" in parts else None
    for i in range(iters):
        b = next(batches)
        xs, ys, xt = b["source"]["img"], b["source"]["gt"], b["target"]["img"]
        if labelled_target is not None:  # the target's own images and labels take the source's place
            xs, ys = next(labelled_target)
        n = xs.shape[0]
        with torch.no_grad():
            if "fda" in parts:
                xs = fft_perturb_logits(xs, xt, sample_eps(n, 0.01, 0.09, generator=g))
            out_s, out_t = teacher(xs), teacher(xt)
        eps = sample_eps(n, cfg.prn.eps_low, cfg.prn.eps_high, generator=g)
        z = (out_s.logits if parts & {"no_perturb", "target_labels"}
             else fft_perturb_logits(out_s.logits, out_t.logits, eps))
        feats = out_s.features
        if "feature_fft" in parts:
            feats = [fft_perturb_logits(fs, ft, eps) for fs, ft in zip(out_s.features, out_t.features)]
        if protos is not None:   # the target, its teacher logits and their rectified labels take the source's place
            z, feats = out_t.logits, out_t.features
            ys = torch.nn.functional.interpolate(rectified_logits(out_t, protos).argmax(1, keepdim=True).float(),
                                                 size=xt.shape[-2:], mode="nearest")[:, 0].long()
        out = step.losses(prn, PRNBatch(feats, z, ys), target=PRNBatch(out_t.features, out_t.logits),
                          target_images=xt, teacher=lambda x: teacher(x).logits.float(), generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i % 100 == 0:
            print(f"  {variant} step {i}: refine CE {out.terms['prn_ref'].item():.3f}  "
                  f"noise BCE {out.terms['prn_noise'].item():.3f}", flush=True)
    prn.eval()
    prn.prototypes = protos
    prn.tta = "tta" in parts
    return prn


def score_rectified(teacher, protos, cfg, data_root, n_images) -> float:
    """mIoU of the prototype-rectified labels themselves on the labelled target split (with
    ``protos`` None: of the test-time augmented labels, :func:`tta_probabilities`)."""
    from prnseg.metrics import ConfusionMatrix

    vcfg = val_dataset_config(cfg)
    ds = build_eval_dataset(vcfg.kind, data_root, vcfg.split)
    pipe = build_test_pipeline(size=vcfg.size)
    cm = ConfusionMatrix(teacher.num_classes)
    with torch.no_grad():
        for i in range(min(n_images, len(ds)) if n_images > 0 else len(ds)):
            rgb, gt = ds.load_raw(i)
            x = torch.from_numpy(np.ascontiguousarray(pipe({"img": rgb, "gt": None}, np.random.default_rng(0))["img"]
                                                      .transpose(2, 0, 1), dtype=np.float32))[None]
            h, w = x.shape[-2:]
            if protos is None:
                z = tta_probabilities(teacher, x)
            else:
                x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))
                z = rectified_logits(teacher(x), protos)
                z = torch.nn.functional.interpolate(z, size=x.shape[-2:], mode="bilinear",
                                                    align_corners=False)[..., :h, :w]
            z = torch.nn.functional.interpolate(z, size=gt.shape, mode="bilinear", align_corners=False)
            cm.update(z.argmax(1)[0].numpy(), gt)
    return cm.miou()


def _labelled_target_batches(cfg, seed, target_list=None):
    """Endless (images, labels) batches of the target *train* split at the val resolution, each
    image mirrored with probability 1/2: the ``target_labels`` upper bound's training data (only
    the images ``target_list`` names, when given: entries match the one image path ending in them)."""
    vcfg = val_dataset_config(cfg)
    ds = build_eval_dataset(vcfg.kind, cfg.data.target.root, "train")
    pipe = build_test_pipeline(size=vcfg.size)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(ds))
    if target_list:
        names = [str(r.image).replace("\\", "/") for r in ds.records]
        wanted = [w.strip() for w in open(target_list, encoding="utf-8") if w.strip()]
        pool = np.array(sorted({next(i for i, n in enumerate(names) if n.endswith("/" + w)) for w in wanted}))
        print(f"  target_labels: {len(pool)} images of {target_list}", flush=True)
    while True:
        xs, ys = [], []
        for i in pool[rng.integers(len(pool), size=cfg.train.batch_size)]:
            rgb, gt = ds.load_raw(int(i))
            sample = pipe({"img": rgb, "gt": gt}, rng)
            img, lbl = sample["img"].transpose(2, 0, 1), sample["gt"]
            if rng.random() < 0.5:
                img, lbl = img[..., ::-1], lbl[..., ::-1]
            xs.append(torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)))
            ys.append(torch.from_numpy(np.ascontiguousarray(lbl, dtype=np.int64)))
        yield torch.stack(xs), torch.stack(ys)


def score(teacher, prn, cfg, data_root, n_images):
    """Raw vs refined (:func:`scoring_step`'s labels) and both noise detectors, by the evaluation's
    own code path."""
    vcfg = val_dataset_config(cfg)
    ds = build_eval_dataset(vcfg.kind, data_root, vcfg.split)
    s = evaluate_pseudo_labels(teacher, prn, ds, vcfg.size, torch.device("cpu"), scoring_step(cfg),
                               cfg.uda.pseudo_threshold, max_images=max(n_images, 0), progress=False, sweep=(0.9,))
    return {"raw_miou": s["raw"]["miou"], "refined_miou": s["refined"]["miou"],
            "written_miou_at_0.9": s["written_at"]["0.9"]["miou"],
            "raw_pixel_accuracy": s["raw"]["pixel_accuracy"], "refined_pixel_accuracy": s["refined"]["pixel_accuracy"],
            "noise_auroc": s["noise_detector"]["auroc"], "max_softmax_auroc": s["confidence_baseline"]["auroc"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a prnseg train checkpoint with an EMA teacher")
    ap.add_argument("--data", required=True, help="synthetic benchmark root (holds gta/ and cityscapes/)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS),
                    help=f"variants, each one of {', '.join(VARIANTS)} or several joined with '+'")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--val-images", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-list", default=None, metavar="FILE",
                    help="target_labels reads only the target train images FILE names (e.g. suggest.txt)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for v in args.variants:
        try:
            variant_parts(v)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    teacher, _, cfg = load_checkpoint_model(args.checkpoint, "teacher")
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg.data.source.root = f"{args.data}/gta"
    cfg.data.target.root = f"{args.data}/cityscapes"
    lr = cfg.optim.lr * cfg.optim.head_lr_mult
    rows = {}
    for v in args.variants:
        t0 = time.perf_counter()
        prn = train_variant(v, teacher, cfg, args.iters, args.seed, lr, args.target_list)
        rows[v] = {**score(teacher, prn, cfg, cfg.data.target.root, args.val_images),
                   "seconds": round(time.perf_counter() - t0, 1)}
        r = rows[v]
        if prn.tta:
            r["tta_miou"] = score_rectified(teacher, None, cfg, cfg.data.target.root, args.val_images)
            print(f"{v:<12} the test-time augmented labels themselves: {100 * r['tta_miou']:5.1f} mIoU", flush=True)
        if getattr(prn, "prototypes", None) is not None:
            r["rectified_miou"] = score_rectified(teacher, prn.prototypes, cfg, cfg.data.target.root, args.val_images)
            print(f"{v:<12} the prototype-rectified labels themselves: {100 * r['rectified_miou']:5.1f} mIoU",
                  flush=True)
        print(f"{v:<12} raw {100 * r['raw_miou']:5.1f} -> refined {100 * r['refined_miou']:5.1f} mIoU   "
              f"pixel acc {100 * r['raw_pixel_accuracy']:5.1f} -> {100 * r['refined_pixel_accuracy']:5.1f}   "
              f"noise AUROC {100 * r['noise_auroc']:5.1f} (max-softmax {100 * r['max_softmax_auroc']:5.1f})",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "iters": args.iters, "val_images": args.val_images,
                       "target_list": args.target_list, "variants": rows}, f, indent=2)


if __name__ == "__main__":
    main()
