"""``prnseg import-labels EXPORT --suggest OUT/suggest``: the hand labels of a CVAT "Segmentation mask
1.1" export as trainId PNGs beside their images (argument parsing, then
:func:`prnseg.serve.import_labels.import_cvat_masks`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from prnseg.formatting import pct
from prnseg.labels import CITYSCAPES_CLASSES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("export", metavar="EXPORT", help="the zip CVAT exported as 'Segmentation mask 1.1' (or the "
                   "folder it was extracted to)")
    p.add_argument("--suggest", default=None, metavar="DIR", help="the folder prnseg label --suggest wrote "
                   "(OUT/suggest): images from DIR/images, labels to DIR/labels, so DIR is a folder dataset")
    p.add_argument("--images", default=None, metavar="DIR", help="instead of --suggest: the folder of the "
                   "images uploaded to CVAT (masks are paired with them by relative path, or by file name)")
    p.add_argument("--out", default=None, metavar="DIR", help="with --images: labels go to DIR/labels, at the "
                   "images' relative paths")
    p.add_argument("--model", default=None, metavar="MODEL_DIR", help="exported model folder whose classes the "
                   "labels are numbered by (default: the 19 Cityscapes classes)")


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    from prnseg.serve.import_labels import ImportLabelsError

    if args.suggest is not None:
        if args.images is not None or args.out is not None:
            raise ImportLabelsError("give --suggest DIR, or --images DIR with --out DIR, not both")
        d = Path(args.suggest)
        if not (d / "suggest.txt").is_file() and (d / "suggest" / "suggest.txt").is_file():
            raise ImportLabelsError(f"{d}: the prnseg label run's folder; pass its labelling queue: --suggest "
                                    f"{d / 'suggest'}")
        return d / "images", d
    if args.images is None or args.out is None:
        raise ImportLabelsError("say where the images are and where the labels go: --suggest OUT/suggest, or "
                                "--images DIR --out DIR")
    return Path(args.images), Path(args.out)


def _classes(model: str | None) -> tuple[list[str], Path | None]:
    """The classes whose indices the labels hold, and the model folder they came from."""
    if model is None:
        return list(CITYSCAPES_CLASSES), None
    from prnseg.checks import check_model_dir
    from prnseg.model_spec import load_model_spec

    model_dir = check_model_dir(model)
    return load_model_spec(model_dir, require_ready=False).classes, model_dir


def _dataset_root(images: Path, out: Path) -> Path | None:
    """The root a ``folder`` dataset reads these images and labels from, if there is one: it takes
    ROOT/images (or ROOT itself when it has no images/) and ROOT/labels."""
    img = images.resolve()
    if img == (out / "images").resolve() or (img == out.resolve() and not (out / "images").is_dir()):
        return out
    return None


def run(args: argparse.Namespace) -> int:
    from prnseg.serve.import_labels import import_cvat_masks
    from prnseg.serve.label_cli import train_config

    images, out = _folders(args)
    classes, model_dir = _classes(args.model)
    root = _dataset_root(images, out)
    s = import_cvat_masks(Path(args.export), images, out, classes, require_all=root is not None)
    by_stem = f" ({s['matched_by_stem']} paired by file name: the export flattened their paths)" \
        if s["matched_by_stem"] else ""
    print(f"imported {s['imported']} masks from {s['export']} into {s['labels_dir']}{by_stem}; "
          f"{pct(s['ignored_fraction'])} % of the pixels ignored (background)")
    shares = sorted(((n, c) for c, n in s["class_pixels"].items() if n), reverse=True)
    if s["pixels"]:
        print("classes: " + ", ".join(f"{c} {pct(n / s['pixels'])} %" for n, c in shares))
    if root is None:
        if s["images_without_mask"]:
            print(f"{len(s['images_without_mask'])} images under {images} have no mask in the export (no label)")
        print(f"to train on them: put the labelled images and their labels side by side as ROOT/images and "
              f"ROOT/labels (paths as under {images}), then --set data.target_labeled.kind=folder "
              f"--set data.target_labeled.root=ROOT")
        return 0
    config = train_config(model_dir) if model_dir is not None else "gta2cityscapes"
    roots = _training_roots(model_dir)
    data = " ".join(f"--set data.{n}.root={shlex.quote(roots.get(n, n.upper() + '_ROOT'))}"
                    for n in ("source", "target"))
    print(f"next: prnseg train --config {config} {data} --set data.target_labeled.kind=folder "
          f"--set data.target_labeled.root={shlex.quote(str(root))}   # {s['imported']} hand-labelled images "
          f"({root}: images/, labels/)")
    missing = [n for n in ("source", "target") if n not in roots]
    if missing:
        why = "give --model MODEL_DIR to read them from the model" if model_dir is None else \
            f"{model_dir / 'model.json'} records no such folder that exists here"
        print(f"  ({', '.join(n.upper() + '_ROOT' for n in missing)}: the {' and '.join(missing)} data the model "
              f"was trained on; {why})")
    return 0


def _training_roots(model_dir: Path | None) -> dict[str, str]:
    """The source and target roots the exported model recorded (``checkpoint.data``), where they
    still exist."""
    import json

    if model_dir is None:
        return {}
    try:
        data = json.loads((model_dir / "model.json").read_text()).get("checkpoint", {}).get("data") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    entries = {name: data.get(name) for name in ("source", "target")}
    roots = {name: e.get("root") for name, e in entries.items() if isinstance(e, dict)}
    return {name: root for name, root in roots.items() if root and Path(root).is_dir()}
