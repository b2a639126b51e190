"""``prnseg import-labels``: a CVAT "Segmentation mask 1.1" export becomes trainId PNGs beside the
images of the labelling queue, and that folder trains as a ``folder`` dataset. Colours come from the
export's labelmap.txt (here in another order and with other colours than the palette), masks pair
with images by relative path or, where CVAT flattened the names, by file stem."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from prnseg.image_io import encode_image, encode_palette_png, read_label, write_image
from prnseg.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from prnseg.serve.import_labels import ImportLabelsError, import_cvat_masks, normalise, parse_labelmap
from prnseg.serve.suggest import Candidate, _cvat_zip

H, W = 32, 48
#: the queue's images, relative to OUT/suggest/images (two folders, two formats)
IMAGES = ("arden/arden_000000_000098_leftImg8bit.png", "arden/arden_000001_000012_leftImg8bit.png",
          "berlin/berlin_000004_000019_leftImg8bit.jpg")
#: a CVAT task's labels: its own order, its own colours, names spelt its own way
LABELMAP = {"car": (10, 20, 30), "Traffic_Light": (200, 0, 0), "road": (1, 2, 3), "background": (0, 0, 0),
            "sky": (0, 0, 255), "person": (5, 250, 5)}
TRAIN_ID = {"car": 13, "Traffic_Light": 6, "road": 0, "background": IGNORE_INDEX, "sky": 10, "person": 11}


def key(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def truth(i: int) -> np.ndarray:
    """Image i's label: bands of a few classes, the first image with unlabelled (background) pixels."""
    names = [["road", "car", "background"], ["sky", "Traffic_Light", "person"], ["road", "sky", "car"]][i]
    label = np.empty((H, W), np.uint8)
    for j, name in enumerate(names):
        label[:, j * W // 3:(j + 1) * W // 3] = TRAIN_ID[name]
    label[H // 2:, : W // 4] = TRAIN_ID["person"]
    return label


def paint(label: np.ndarray, labelmap: dict = LABELMAP) -> np.ndarray:
    rgb = np.zeros((*label.shape, 3), np.uint8)
    for name, colour in labelmap.items():
        rgb[label == TRAIN_ID[name]] = colour
    return rgb


def labelmap_txt(labelmap: dict = LABELMAP) -> str:
    return "# label:color_rgb:parts:actions\n" + "".join(
        f"{n}:{','.join(map(str, c))}::\n" for n, c in labelmap.items())


def write_export(path: Path, masks: dict[str, bytes], labelmap: str | None = None) -> Path:
    """A zip laid out as CVAT exports Segmentation mask 1.1, SegmentationObject/ included."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("labelmap.txt", labelmap if labelmap is not None else labelmap_txt())
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{k}\n" for k in masks))
        for k, data in masks.items():
            z.writestr(f"SegmentationClass/{k}.png", data)
            z.writestr(f"SegmentationObject/{k}.png", encode_image(np.full((H, W, 3), 77, np.uint8)))
    return path


def masks_of(flatten: bool = False) -> dict[str, bytes]:
    return {(key(rel).rsplit("/", 1)[-1] if flatten else key(rel)): encode_image(paint(truth(i)))
            for i, rel in enumerate(IMAGES)}


@pytest.fixture
def queue(tmp_path) -> Path:
    """OUT/suggest as prnseg label --suggest leaves it: suggest.txt and images/."""
    folder = tmp_path / "out" / "suggest"
    rng = np.random.default_rng(0)
    for rel in IMAGES:
        write_image(folder / "images" / rel, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    (folder / "suggest.txt").write_text("".join(f"{rel}\n" for rel in IMAGES))
    return folder


def written(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder / "labels").as_posix(): read_label(p) for p in sorted((folder / "labels").rglob("*"))
            if p.is_file()}


def expected() -> dict[str, np.ndarray]:
    return {key(rel) + ".png": truth(i) for i, rel in enumerate(IMAGES)}


def assert_labels(folder: Path, want: dict[str, np.ndarray]) -> None:
    got = written(folder)
    assert sorted(got) == sorted(want)
    for name, label in want.items():
        assert got[name].dtype == np.uint8 and got[name].ndim == 2, name
        np.testing.assert_array_equal(got[name], label, err_msg=name)


def test_the_cli_writes_each_masks_trainids_beside_its_image(queue, tmp_path):
    export = write_export(tmp_path / "task_export.zip", masks_of())
    proc = run_cli("import-labels", export, "--suggest", queue)
    assert_labels(queue, expected())
    assert (truth(0) == IGNORE_INDEX).any()  # the background pixels were written as ignore
    assert f"imported 3 masks from {export} into {queue / 'labels'}" in proc.stdout
    nxt = [ln for ln in proc.stdout.splitlines() if ln.startswith("next: prnseg train")]
    assert nxt and "--set data.target_labeled.kind=folder" in nxt[0]
    assert f"--set data.target_labeled.root={queue} " in nxt[0] and "--config gta2cityscapes" in nxt[0]
    assert not proc.stderr


def test_flattened_names_pair_by_file_stem_and_an_extracted_folder_reads_too(queue, tmp_path):
    export = write_export(tmp_path / "flat.zip", masks_of(flatten=True))
    proc = run_cli("import-labels", export, "--suggest", queue)
    assert_labels(queue, expected())
    assert "3 paired by file name" in proc.stdout
    (queue / "labels").rename(tmp_path / "first")
    with zipfile.ZipFile(export) as z:
        z.extractall(tmp_path / "extracted" / "task")  # unzip tools may add a folder of their own
    summary = import_cvat_masks(tmp_path / "extracted", queue / "images", queue, CITYSCAPES_CLASSES)
    assert summary["imported"] == 3 and summary["matched_by_stem"] == 3
    assert_labels(queue, expected())


def test_an_indexed_png_mask_reads_by_its_colours(queue, tmp_path):
    """A mask saved as a palette PNG (as some editors save them) is read by colour, not by index."""
    order = list(LABELMAP)
    palette = [LABELMAP[n] for n in order]
    index = {TRAIN_ID[n]: i for i, n in enumerate(order)}
    masks = {key(rel): encode_palette_png(np.vectorize(index.get)(truth(i)).astype(np.uint8), palette)
             for i, rel in enumerate(IMAGES)}
    import_cvat_masks(write_export(tmp_path / "p.zip", masks), queue / "images", queue, CITYSCAPES_CLASSES)
    assert_labels(queue, expected())


def test_the_suggest_pre_annotations_import_back_to_the_same_trainids(queue, tmp_path):
    """Round trip: the zip label --suggest writes (Cityscapes palette, background first), untouched,
    gives back the labels it was made from, their ignored pixels 255."""
    run = tmp_path / "run"
    rng = np.random.default_rng(1)
    want = {}
    for rel in IMAGES:
        label = rng.integers(0, len(CITYSCAPES_CLASSES), (H, W)).astype(np.uint8)
        label[:4] = IGNORE_INDEX
        (run / "labels" / key(rel)).parent.mkdir(parents=True, exist_ok=True)
        (run / "labels" / f"{key(rel)}.png").write_bytes(encode_palette_png(label, CITYSCAPES_PALETTE))
        want[key(rel) + ".png"] = label
    chosen = [Candidate(rel, key(rel)) for rel in IMAGES]
    zip_bytes = _cvat_zip(run, chosen, list(CITYSCAPES_CLASSES), [list(c) for c in CITYSCAPES_PALETTE])
    (tmp_path / "pre.zip").write_bytes(zip_bytes)
    summary = import_cvat_masks(tmp_path / "pre.zip", queue / "images", queue, CITYSCAPES_CLASSES)
    assert_labels(queue, want)
    assert summary["ignored_fraction"] == pytest.approx(4 / H)
    assert sum(summary["class_pixels"].values()) + summary["ignored_pixels"] == summary["pixels"] == 3 * H * W


def test_the_labels_build_a_folder_dataset_and_the_labelled_target(queue, tmp_path):
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_labeled_target
    from prnseg.training.data.datasets import build_dataset

    import_cvat_masks(write_export(tmp_path / "e.zip", masks_of()), queue / "images", queue, CITYSCAPES_CLASSES)
    ds = build_dataset("folder", queue, split="all", load_labels=True)
    assert sorted(r.image.relative_to(queue / "images").as_posix() for r in ds.records) == sorted(IMAGES)
    for i, r in enumerate(ds.records):
        rel = r.image.relative_to(queue / "images").as_posix()
        img, gt = ds.load_raw(i)
        np.testing.assert_array_equal(gt, truth(IMAGES.index(rel)))
        np.testing.assert_array_equal(ds[i]["gt"].numpy(), truth(IMAGES.index(rel)))
    cfg = load_config("synthetic", [f"data.target.root={tmp_path}", "data.workers=0",
                                    "data.target_labeled.kind=folder", f"data.target_labeled.root={queue}"])
    assert len(build_labeled_target(cfg)) == len(IMAGES)


def test_the_model_s_classes_number_the_labels(queue, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    classes = ["sky", "road", "traffic light", "car", "person"]
    (model / "model.json").write_text(json.dumps({
        "format": "prnseg-model", "format_version": 1, "ready": False, "classes": classes,
        "palette": [[i, i, i] for i in range(len(classes))], "artefacts": {},
        "input": {"mean": [0, 0, 0], "std": [1, 1, 1], "buckets": [[32, 64]]},
        "checkpoint": {"config": "synthetic", "config_shipped": True}}))
    lm = {n: c for n, c in LABELMAP.items() if n != "background"}
    masks = {key(rel): encode_image(paint(truth(1), lm)) for rel in IMAGES}
    proc = run_cli("import-labels", write_export(tmp_path / "m.zip", masks, labelmap_txt(lm)), "--images",
                   queue / "images", "--out", queue, "--model", model)
    ids = {"sky": 0, "Traffic_Light": 2, "person": 4}
    want = np.zeros((H, W), np.uint8)
    for name, tid in ids.items():
        want[truth(1) == TRAIN_ID[name]] = tid
    assert_labels(queue, {key(rel) + ".png": want for rel in IMAGES})
    assert "--config synthetic" in proc.stdout
    # a model exported before it recorded its training data: placeholders, and why
    assert "data.source.root=SOURCE_ROOT" in proc.stdout and "records no such folder" in proc.stdout


def test_the_train_line_names_the_data_the_model_was_trained_on(queue, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    src, tgt = tmp_path / "gta data", tmp_path / "cityscapes"
    src.mkdir()
    tgt.mkdir()
    (model / "model.json").write_text(json.dumps({
        "format": "prnseg-model", "format_version": 1, "ready": False, "classes": list(CITYSCAPES_CLASSES),
        "palette": [list(c) for c in CITYSCAPES_PALETTE], "artefacts": {},
        "input": {"mean": [0, 0, 0], "std": [1, 1, 1], "buckets": [[32, 64]]},
        "checkpoint": {"config": "synthetic", "config_shipped": True,
                       "data": {"source": {"kind": "gta", "root": str(src)},
                                "target": {"kind": "cityscapes", "root": str(tgt)}}}}))
    proc = run_cli("import-labels", write_export(tmp_path / "e.zip", masks_of()), "--suggest", queue, "--model", model)
    nxt = [ln for ln in proc.stdout.splitlines() if ln.startswith("next: prnseg train")]
    assert nxt and f"--set data.source.root='{src}' --set data.target.root={tgt} " in nxt[0]
    assert "_ROOT" not in proc.stdout


def _undeclared(tmp_path):
    masks = masks_of()
    rgb = paint(truth(1))
    rgb[:3, :5] = (9, 9, 9)
    masks[key(IMAGES[1])] = encode_image(rgb)
    return write_export(tmp_path / "x.zip", masks), [f"SegmentationClass/{key(IMAGES[1])}.png", "15 pixels have "
                                                     "a colour not declared in labelmap.txt ((9,9,9) on 15)"]


def _unknown_name(tmp_path):
    return write_export(tmp_path / "x.zip", masks_of(), labelmap_txt({**LABELMAP, "lamppost": (7, 7, 7)})), [
        "labelmap.txt", "'lamppost' are not classes", "known: road, sidewalk"]


def _no_image(tmp_path):
    masks = masks_of()
    masks["arden/arden_999999_000000_leftImg8bit"] = masks.pop(key(IMAGES[0]))
    return write_export(tmp_path / "x.zip", masks), ["SegmentationClass/arden/arden_999999_000000_leftImg8bit.png",
                                                     "no image named"]


def _wrong_size(tmp_path):
    masks = masks_of()
    masks[key(IMAGES[2])] = encode_image(np.zeros((H + 1, W, 3), np.uint8))
    return write_export(tmp_path / "x.zip", masks), [f"SegmentationClass/{key(IMAGES[2])}.png",
                                                     f"mask is {W}x{H + 1} but its image is {W}x{H}"]


@pytest.mark.parametrize("make", [_undeclared, _unknown_name, _no_image, _wrong_size],
                         ids=["undeclared-colour", "unknown-class", "no-image", "wrong-size"])
def test_a_bad_export_is_a_one_line_error_and_writes_nothing(queue, tmp_path, make):
    export, parts = make(tmp_path)
    proc = run_cli("import-labels", export, "--suggest", queue, check=False)
    assert proc.returncode == 2 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prnseg import-labels: error: "), proc.stderr
    assert all(p in lines[0] for p in parts), lines[0]
    assert not (queue / "labels").exists()


def test_pairing_errors_name_the_mask_and_what_it_matched(queue, tmp_path):
    write_image(queue / "images" / "other" / IMAGES[0].split("/")[1], np.zeros((H, W, 3), np.uint8))
    flat = write_export(tmp_path / "flat.zip", masks_of(flatten=True))
    with pytest.raises(ImportLabelsError, match=r"arden_000000_000098_leftImg8bit\.png: matches 2 images"):
        import_cvat_masks(flat, queue / "images", queue, CITYSCAPES_CLASSES)
    # with the paths kept, the same names pair exactly; the extra image then has no mask
    with pytest.raises(ImportLabelsError, match=r"1 image\(s\) have no mask .*other/arden_000000"):
        import_cvat_masks(write_export(tmp_path / "e.zip", masks_of()), queue / "images", queue, CITYSCAPES_CLASSES)
    s = import_cvat_masks(tmp_path / "e.zip", queue / "images", queue, CITYSCAPES_CLASSES, require_all=False)
    assert s["images_without_mask"] == ["other/" + IMAGES[0].split("/")[1]] and s["imported"] == 3


def test_a_label_run_folder_is_never_written_into(queue, tmp_path):
    run = queue.parent
    (run / "manifest.jsonl").write_text("")
    export = write_export(tmp_path / "e.zip", masks_of())
    proc = run_cli("import-labels", export, "--suggest", run, check=False)
    assert proc.returncode == 2 and f"pass its labelling queue: --suggest {queue}" in proc.stderr
    with pytest.raises(ImportLabelsError, match="holds a prnseg label run"):
        import_cvat_masks(export, queue / "images", run, CITYSCAPES_CLASSES)
    assert not (run / "labels").exists() and not (queue / "labels").exists()


def test_labelmap_names_compare_without_case_spaces_or_underscores():
    assert normalise("Traffic_Light") == normalise("traffic light") == normalise("traffic-light ")
    lm = parse_labelmap("# c\nVoid:0,0,0::\nTraffic_Light:1,2,3:part:act\nbicycle:4,5,6::\n", "lm", CITYSCAPES_CLASSES)
    assert dict(zip(lm.colours.tolist(), lm.ids.tolist())) == {0: 255, 0x010203: 6, 0x040506: 18}
    with pytest.raises(ImportLabelsError, match="lm:2: colour .* declared for both 'road' and 'car'"):
        parse_labelmap("road:1,1,1::\ncar:1,1,1::\n", "lm", CITYSCAPES_CLASSES)
    with pytest.raises(ImportLabelsError, match="lm:1: 'road:1,1::' has no colour"):
        parse_labelmap("road:1,1::\n", "lm", CITYSCAPES_CLASSES)
