"""The labelling queue: ``prnseg label --suggest K`` ranks images by noise mass on rare classes,
spreads near-duplicates, writes suggest.txt that training reads as it is, and CVAT pre-annotations."""

from __future__ import annotations

import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from conftest import run_cli
from prnseg.serve.suggest import Candidate, choose, class_weights, descriptor, image_score

TARGET_TRAIN = "cityscapes/leftImg8bit/train"


def test_rare_classes_weigh_more_and_an_absent_class_weighs_the_cap():
    hists = np.array([[1000, 10, 0], [1000, 10, 0]])
    w = class_weights(hists)
    assert w[1] == pytest.approx(np.sqrt((505 / 1010) / (10 / 1010)))  # median of the two present classes
    assert w[0] < 1 < w[1] and w[2] == 10.0


def test_noise_on_a_rare_class_scores_above_the_same_noise_on_a_common_one():
    weights = np.array([1.0, 5.0])
    label = np.zeros((4, 4), np.uint8)
    label[:, 2:] = 1
    noise_common, noise_rare = np.zeros((4, 4)), np.zeros((4, 4))
    noise_common[:, 0], noise_rare[:, 3] = 1.0, 1.0
    assert image_score(label, noise_rare, weights) == pytest.approx(5 * image_score(label, noise_common, weights))
    ignored = np.full((4, 4), 255, np.uint8)  # an unlabelled pixel counts at weight 1
    assert image_score(ignored, noise_rare, weights) == pytest.approx(0.25)


def test_a_near_duplicate_is_passed_over_for_a_different_scene():
    street = np.zeros((32, 64), np.uint8)
    street[16:] = 1
    square = np.full((32, 64), 2, np.uint8)
    cands = [Candidate("a.png", "a", 1.0, descriptor(street, 3)), Candidate("b.png", "b", 0.95, descriptor(street, 3)),
             Candidate("c.png", "c", 0.5, descriptor(square, 3))]
    assert [c.path for c in choose(cands, 2)] == ["a.png", "c.png"]
    assert [c.path for c in choose(cands, 3)] == ["a.png", "c.png", "b.png"]
    assert [c.path for c in choose(cands, 1)] == ["a.png"]


@pytest.fixture(scope="module")
def suggested(exported_model, synth_root, tmp_path_factory):
    """`prnseg label --suggest 3` on the target train images plus an exact copy of one of them."""
    base = tmp_path_factory.mktemp("suggest")
    inp = base / "train"
    shutil.copytree(synth_root / TARGET_TRAIN, inp)
    first = sorted(inp.rglob("*.png"))[0]
    shutil.copyfile(first, first.with_name("copy_" + first.name))
    out = base / "out"
    proc = run_cli("label", inp, "--model", exported_model, "--out", out, "--suggest", "3", "--no-progress",
                   "--workers", "1")
    return inp, out, proc


def test_suggest_writes_a_ranked_list_of_input_images(suggested):
    inp, out, proc = suggested
    listed = (out / "suggest" / "suggest.txt").read_text().splitlines()
    assert len(listed) == 3 and len(set(listed)) == 3
    assert all((inp / p).is_file() for p in listed)
    for p in listed:  # the copies to upload are the images, byte for byte
        assert (out / "suggest" / "images" / p).read_bytes() == (inp / p).read_bytes()
    assert "suggest: the 3 images most worth labelling" in proc.stdout


def test_an_exact_duplicate_is_never_suggested_twice(suggested):
    _, out, _ = suggested
    names = [p.rsplit("/", 1)[-1].removeprefix("copy_") for p in
             (out / "suggest" / "suggest.txt").read_text().splitlines()]
    assert len(names) == len(set(names))


def test_the_pre_annotations_follow_cvats_segmentation_mask_format(suggested):
    """CVAT's 'Segmentation mask 1.1' import: labelmap.txt lines `name:R,G,B::`, the item names in
    ImageSets/Segmentation/default.txt (no extension), one SegmentationClass PNG per item whose
    every colour is declared in the labelmap (an undeclared one fails CVAT's import)."""
    _, out, _ = suggested
    listed = (out / "suggest" / "suggest.txt").read_text().splitlines()
    with zipfile.ZipFile(out / "suggest" / "cvat_segmentation_mask.zip") as z:
        lines = [ln for ln in z.read("labelmap.txt").decode().splitlines() if ln and not ln.startswith("#")]
        colours = {}
        for ln in lines:
            m = re.fullmatch(r"([^:]+):(\d{1,3}),(\d{1,3}),(\d{1,3})::", ln)
            assert m, ln
            colours[tuple(int(v) for v in m.groups()[1:])] = m.group(1)
        assert len(colours) == len(lines) == 20 and colours[(0, 0, 0)] == "background"
        items = z.read("ImageSets/Segmentation/default.txt").decode().splitlines()
        assert items == [p.rsplit(".", 1)[0] for p in listed]
        for item in items:
            mask = cv2.imdecode(np.frombuffer(z.read(f"SegmentationClass/{item}.png"), np.uint8), cv2.IMREAD_COLOR)
            used = {tuple(int(v) for v in c[::-1]) for c in np.unique(mask.reshape(-1, 3), axis=0)}
            assert used <= set(colours), used - set(colours)


def test_the_pre_annotations_import_with_datumaro_as_cvat_does(suggested, tmp_path):
    """CVAT imports this format with Datumaro's VOC importer (CVAT's dataset_manager/formats/mask.py).
    Datumaro pins OpenCV below the version this project installs, so it is not a dev dependency:
    ``pip install datumaro`` into a separate environment with prnseg to run this check."""
    dm = pytest.importorskip("datumaro", reason="datumaro is not installed (it pins opencv<5; see the docstring)")
    _, out, _ = suggested
    with zipfile.ZipFile(out / "suggest" / "cvat_segmentation_mask.zip") as z:
        z.extractall(tmp_path / "voc")
    dataset = dm.Dataset.import_from(str(tmp_path / "voc"), "voc_segmentation")
    listed = (out / "suggest" / "suggest.txt").read_text().splitlines()
    assert sorted(item.id for item in dataset) == sorted(p.rsplit(".", 1)[0] for p in listed)
    assert all(any(a.type == dm.AnnotationType.mask for a in item.annotations) for item in dataset)


def test_suggest_txt_round_trips_into_training(suggested, synth_root):
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_labeled_target

    _, out, _ = suggested
    listed = [p for p in (out / "suggest" / "suggest.txt").read_text().splitlines() if not p.split("/")[-1]
              .startswith("copy_")]
    lst = out.parent / "kept.txt"
    lst.write_text("".join(f"{p}\n" for p in listed))
    cfg = load_config("synthetic", [f"data.target.root={synth_root / 'cityscapes'}", "data.workers=0",
                                    f"data.target_labeled.root={synth_root / 'cityscapes'}",
                                    f"data.target_labeled.list={lst}"])
    ds = build_labeled_target(cfg)
    train_dir = synth_root / "cityscapes" / "leftImg8bit" / "train"
    got = sorted(r.image.relative_to(train_dir).as_posix() for r in ds.records)
    assert got == sorted(listed) and listed


def test_suggest_zero_is_a_one_line_error_before_any_work(exported_model, synth_root, tmp_path):
    proc = run_cli("label", synth_root / TARGET_TRAIN, "--model", exported_model, "--out", tmp_path / "o",
                   "--suggest", "0", check=False)
    assert proc.returncode == 2 and "--suggest 0: give the number of images" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
