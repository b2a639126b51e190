"""`prnseg label`: resumable, atomic, sharded folder pseudo-labelling on a real exported model."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli, tiny_train_args

from prnseg.image_io import read_image
from prnseg.model_spec import Bucket
from prnseg.serve.label_metrics import gt_candidates
from prnseg.serve.pipeline import (
    Journal,
    LabelError,
    LabelOptions,
    _scan_outputs,
    check_settings,
    list_inputs,
    shard_of,
)

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
OUTPUT_TREES = ("labels", "noise", "confidence", "raw", "color", "noise_prob")


def render_folder(root: Path, n: int, hw=(64, 128), seed: int = 0) -> list[str]:
    """n distinct target-style street scenes in nested folders (every 7th a JPEG)."""
    from prnseg.training.data.synthetic import render_scene

    h, w = hw
    base = [render_scene(seed + s, (w, h), "target")[0] for s in range(min(n, 6))]
    rels = []
    for i in range(n):
        k = i // len(base)
        img = np.roll(base[i % len(base)][:, ::-1] if k % 2 else base[i % len(base)], 5 * k, axis=1)
        img = np.clip(img.astype(np.int16) + (k % 7) * 5 - 15, 0, 255).astype(np.uint8)
        rel = f"seq{i % 3}/part{i % 2}/frame_{i:04d}.{'jpg' if i % 7 == 3 else 'png'}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img[:, :, ::-1])
        rels.append(rel)
    return rels


def tree(out: Path) -> dict[str, bytes]:
    """Every output image under OUT (relative path -> bytes)."""
    found = {}
    for sub in OUTPUT_TREES:
        for p in sorted((out / sub).rglob("*")):
            if p.is_file():
                found[p.relative_to(out).as_posix()] = p.read_bytes()
    return found


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp")]


def manifest(out: Path, name: str = "manifest.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def label(inp, model, out, *extra, check=True):
    return run_cli("label", inp, "--model", model, "--out", out, "--no-progress", *extra, check=check)


# -- without a model ------------------------------------------------------------------------------

def test_shard_is_a_stable_hash_of_the_name():
    keys = [f"city{i % 7}/img_{i:05d}" for i in range(2000)]
    counts = np.bincount([shard_of(k, 4) for k in keys], minlength=4)
    assert counts.min() > 400  # roughly even
    assert shard_of("a/b/c", 4) == shard_of("a/b/c", 4)
    # adding files never moves an existing one: the shard depends on the name alone
    assert [shard_of(k, 4) for k in keys[:50]] == [shard_of(k, 4) for k in (keys + ["new/one"])[:50]]


def test_options_are_validated():
    base = dict(input_dir="in", out_dir="out", model_dir="m")
    with pytest.raises(LabelError, match="--save: unknown output.*bogus"):
        LabelOptions(**base, save=("bogus",))
    with pytest.raises(LabelError, match="--shard 2/2"):
        LabelOptions(**base, shard=(2, 2))
    with pytest.raises(LabelError, match="--noise-threshold must be in"):
        LabelOptions(**base, noise_threshold=1.5)
    assert LabelOptions(**base, shard=(0, 1)).shard is None
    assert LabelOptions(**base, shard=(1, 3)).tag == ".shard-1-of-3"


def test_journal_cuts_a_torn_line_and_compacts_to_the_latest_attempt(tmp_path):
    (tmp_path / "manifest.jsonl").write_bytes(
        b'{"path":"b.png","status":"failed","stage":"decode","reason":"x"}\n{"path":"a.png","status":"ok"}\n{"pa')
    j = Journal(tmp_path, "", total=0, progress=False)
    j.add({"path": "b.png", "status": "ok"})
    j.fail("c.png", "write", "disk full")
    j.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)  # torn tail gone, appends intact
    latest = j.compact()
    assert [r["path"] for r in manifest(tmp_path)] == ["a.png", "b.png", "c.png"]
    assert latest["b.png"]["status"] == "ok"
    assert [json.loads(x)["path"] for x in (tmp_path / "failures.jsonl").read_text().splitlines()] == ["c.png"]


def test_stale_temp_files_of_this_shard_are_removed(tmp_path):
    opts = LabelOptions("in", tmp_path, "m", shard=(0, 2))
    mine = next(f"a/img{i}" for i in range(50) if shard_of(f"a/img{i}", 2) == 0)
    other = next(f"a/img{i}" for i in range(50) if shard_of(f"a/img{i}", 2) == 1)
    (tmp_path / "labels/a").mkdir(parents=True)
    for key in (mine, other):
        name = key.split("/")[1]
        (tmp_path / f"labels/a/.{name}.png.k2j4.tmp").write_bytes(b"\x89PNG partial")
    (tmp_path / f"labels/{mine}.png").write_bytes(b"done")
    existing = _scan_outputs(tmp_path, opts)
    assert existing == {f"labels/{mine}.png"}
    left = [p.name for p in temp_files(tmp_path)]
    assert left == [f".{other.split('/')[1]}.png.k2j4.tmp"]  # another shard's write in flight stays


def test_list_inputs_skips_an_output_folder_inside_the_input(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "out/labels").mkdir(parents=True)
    for rel in ("a/x.png", "y.JPG", "notes.txt", "out/labels/x.png"):
        (tmp_path / rel).write_bytes(b"")
    assert list_inputs(tmp_path, exclude=tmp_path / "out") == ["a/x.png", "y.JPG"]


def test_gt_matching_rule():
    assert gt_candidates("aachen/a_000001_000019_leftImg8bit.png")[:2] == [
        ("aachen/a_000001_000019_gtFine_labelTrainIds.png", "trainIds"),
        ("aachen/a_000001_000019_gtFine_labelIds.png", "labelIds")]
    # INPUT_DIR and GT_DIR both the dataset root
    assert (("gtFine/val/x/a_gtFine_labelTrainIds.png", "trainIds")
            in gt_candidates("leftImg8bit/val/x/a_leftImg8bit.png"))
    assert gt_candidates("night/GOPR0356_frame_000321_rgb_anon.png")[0] == (
        "night/GOPR0356_frame_000321_gt_labelTrainIds.png", "trainIds")
    assert gt_candidates("a/b/img.jpg") == [("a/b/img.png", "trainIds")]


# -- on the exported model ------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_halfway_then_resume_is_byte_identical(exported_model, tmp_path):
    inp = tmp_path / "in"
    rels = render_folder(inp, 210)
    extra = ("--save", "confidence,raw", "--batch", "4")
    full = tmp_path / "full"
    label(inp, exported_model, full, *extra)

    out = tmp_path / "killed"
    bad: list[str] = []
    seen: set[Path] = set()
    done = threading.Event()

    def watch():  # every output that appears under its final name must be a complete PNG
        while not done.is_set():
            for p in out.rglob("*.png"):
                if p not in seen and not p.name.startswith("."):
                    data = p.read_bytes()
                    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(PNG_END)):
                        bad.append(f"{p}: {len(data)} bytes")
                    seen.add(p)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    proc = subprocess.Popen([sys.executable, "-m", "prnseg", "label", str(inp), "--model", str(exported_model),
                             "--out", str(out), "--no-progress", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    watcher.start()
    journal = out / "manifest.jsonl"
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline and proc.poll() is None:
        n = journal.read_bytes().count(b"\n") if journal.exists() else 0
        if n >= 100:
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done.set()
    watcher.join()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    labelled_before = journal.read_bytes().count(b"\n")
    assert 50 <= labelled_before < 200, labelled_before  # killed mid-run
    assert not bad, bad
    for p in out.rglob("*.png"):  # and after the kill: complete files under final names only
        if not p.name.startswith("."):
            data = p.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(PNG_END), p

    proc2 = label(inp, exported_model, out, *extra)
    assert "already done" in proc2.stdout
    report = json.loads((out / "report.json").read_text())
    c = report["counts"]
    assert c["skipped_finished"] == labelled_before  # every journalled image is finished
    assert c["skipped_finished"] + c["labelled_this_run"] == len(rels) == c["ok"] and c["failed"] == 0
    a, b = tree(full), tree(out)
    assert len(a) == 4 * len(rels)  # labels, noise, confidence, raw
    assert a.keys() == b.keys()

    def pixels(data: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    differ = {k: int((pixels(a[k]) != pixels(b[k])).sum()) for k in a if a[k] != b[k]}
    assert differ == {}, f"pixels that differ per file {differ}; {labelled_before} images were finished at the kill"
    assert temp_files(out) == []
    assert [r["path"] for r in manifest(out)] == sorted(rels) == [r["path"] for r in manifest(full)]
    assert all(r["status"] == "ok" for r in manifest(out))
    assert (out / "train.txt").read_text() == (full / "train.txt").read_text()


@pytest.mark.slow
def test_a_resumed_run_forms_the_batches_of_an_uninterrupted_one(exported_model, tmp_path):
    """A finished image keeps its place in its batch, so each redone image runs with the same
    neighbours in the same place: a CPU whose kernels round an image by its place in the batch
    still writes the same bytes on a resume."""
    from prnseg.serve.pipeline import label_folder
    from prnseg.serve.predictor import Predictor

    class Recording(Predictor):
        def run_batch(self, batch):
            self.batches.append(tuple(hash(img.tobytes()) for img in batch))
            return super().run_batch(batch)

    inp = tmp_path / "in"
    rels = render_folder(inp, 11)

    def run(out):
        predictor = Recording(exported_model, device="cpu", max_batch=4)
        predictor.batches = []
        opts = LabelOptions(inp, out, exported_model, progress=False, device="cpu", workers=2, batch=4)
        label_folder(opts, predictor=predictor, log=lambda m: None)
        return predictor.batches

    full = tmp_path / "full"
    batches = run(full)
    assert len(batches) == 3 and len(set(batches[2])) == 3  # 4 + 4 + 3 (padded with the last)
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    records = manifest(full)
    (resumed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    for rec in records[5:]:  # as if killed after five images: the rest were never written
        for sub in ("labels", "noise"):
            (resumed / sub / f"{rec['path'].rsplit('.', 1)[0]}.png").unlink()
    assert run(resumed) == batches[1:]  # image 4 fills its old place; images 0-3 are not run at all
    assert tree(resumed) == tree(full)
    report = json.loads((resumed / "report.json").read_text())["counts"]
    assert (report["skipped_finished"], report["labelled_this_run"]) == (5, len(rels) - 5)


def test_a_finished_image_without_a_recorded_bucket_holds_no_place():
    from prnseg.serve.label_local import Ghost, ghost_of
    from prnseg.serve.label_plan import Item

    item = Item("a.png", "a")
    assert ghost_of(item, {"status": "ok", "bucket": [128, 256]}) == Ghost(item, Bucket(128, 256))
    assert ghost_of(item, {"status": "ok"}) is None and ghost_of(item, None) is None


@pytest.mark.slow
def test_bad_files_are_logged_and_the_rest_labelled(exported_model, tmp_path):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    rgb = render_folder(tmp_path / "src", 1, hw=(48, 80))[0]
    rgb = read_image(tmp_path / "src" / rgb)
    cv2.imwrite(str(inp / "good.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(inp / "gray.png"), rgb[:, :, 0])
    cv2.imwrite(str(inp / "rgba.png"), np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 9, np.uint8)]))
    cv2.imwrite(str(inp / "deep.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    cv2.imwrite(str(inp / "sub" / "ok.jpg"), cv2.resize(rgb, (33, 21))[:, :, ::-1])
    cv2.imwrite(str(inp / "sub" / "twin.jpg"), rgb[:, :, ::-1])
    cv2.imwrite(str(inp / "sub" / "twin.png"), rgb[:, :, ::-1])
    ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    (inp / "corrupt.jpg").write_bytes(jpg.tobytes()[:20] + b"\x00garbage" * 50)
    (inp / "empty.png").write_bytes(b"")
    (inp / "text.png").write_text("this is not an image\n")
    assert cv2.imread(str(inp / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    out = tmp_path / "out"
    proc = label(inp, exported_model, out, check=False)
    assert proc.returncode == 1, proc.stderr  # finished, but some images failed
    assert "4 failed" in proc.stdout and "failures.jsonl" in proc.stdout
    failures = {f["path"]: f for f in manifest(out, "failures.jsonl")}
    assert sorted(failures) == ["corrupt.jpg", "empty.png", "sub/twin.png", "text.png"]
    assert "image size unreadable from its header" in failures["corrupt.jpg"]["reason"]  # refused undecoded
    assert "empty (0 bytes)" in failures["empty.png"]["reason"]
    assert "image size unreadable from its header" in failures["text.png"]["reason"]
    assert "same output name as sub/twin.jpg" in failures["sub/twin.png"]["reason"]
    assert all(str(inp) in failures[p]["reason"] for p in ("corrupt.jpg", "empty.png", "text.png"))
    for rel in ("good.png", "gray.png", "rgba.png", "deep.png", "sub/ok.jpg", "sub/twin.jpg"):
        key = rel.rsplit(".", 1)[0]
        shape = read_image(inp / rel).shape[:2]
        for sub in ("labels", "noise", "confidence"):
            plane = cv2.imread(str(out / sub / f"{key}.png"), cv2.IMREAD_UNCHANGED)
            assert plane is not None and plane.shape[:2] == shape, (sub, rel)
    # 16-bit, gray and RGBA inputs are the same picture as the 8-bit RGB one
    same = [cv2.imread(str(out / "labels" / f"{k}.png"), cv2.IMREAD_UNCHANGED) for k in ("good", "rgba", "deep")]
    assert np.array_equal(same[0], same[1]) and np.array_equal(same[0], same[2])
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] | {} == report["counts"] and report["counts"]["ok"] == 6 and report["counts"]["failed"] == 4
    assert {f["path"] for f in report["failures"]} == set(failures)
    assert (out / "train.txt").read_text().split() == sorted(
        ["deep.png", "good.png", "gray.png", "rgba.png", "sub/ok.jpg", "sub/twin.jpg"])

    before = tree(out)
    again = label(inp, exported_model, out, check=False)  # failed ones retried, finished ones skipped
    assert again.returncode == 1 and "labelled 0 images, 4 failed, 6 already done" in again.stdout
    assert len(manifest(out, "failures.jsonl")) == 4 and len(manifest(out)) == 10
    assert tree(out) == before

    stopped = label(inp, exported_model, tmp_path / "stopped", "--max-failures", "2", "--workers", "1", check=False)
    assert stopped.returncode == 2
    assert "stopped after 2 failures (--max-failures 2)" in stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) == 1
    assert json.loads((tmp_path / "stopped" / "report.json").read_text())["aborted"] is True


@pytest.mark.slow
def test_gt_report_agrees_with_prnseg_eval(prn_checkpoint, synth_root, tmp_path):
    from prnseg.export import export_model
    from prnseg.serve.predictor import Predictor
    from prnseg.training.metrics import PseudoLabelQuality

    cs = synth_root / "cityscapes"
    out = tmp_path / "out"
    # prnseg eval scores the PRN's noise head, so the export's mask is the PRN's too (--noise-from prn)
    model = export_model(prn_checkpoint, tmp_path / "model", sizes=["128x256"], max_batch=4,
                         noise_from="prn", progress=False)
    proc = label(cs / "leftImg8bit" / "val", model, out, "--gt", cs / "gtFine" / "val")
    assert "raw mIoU" in proc.stdout and "noise mask precision" in proc.stdout
    gt = json.loads((out / "report.json").read_text())["gt"]
    assert gt["n_images"] == 4 and gt["n_missing"] == 0 and gt["n_errors"] == 0

    run_cli("eval", prn_checkpoint, "--data", cs, "--json", tmp_path / "eval.json")
    ev = json.loads((tmp_path / "eval.json").read_text())["pseudo_labels"]
    # the exported graph is the teacher + PRN at the bucket size, which is the val images' size:
    # the same pixels as eval, so only float differences between PyTorch and ONNX Runtime remain
    assert abs(gt["kept"]["coverage"] - ev["kept"]["coverage"]) < 1e-3  # pixels the noise mask keeps
    def close(a, b, tol=1e-3):      # None on both sides: no pixel to score (e.g. the mask keeps none)
        return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < tol)

    for key in ("raw", "refined", "kept"):
        assert abs(gt[key]["n_pixels"] - ev[key]["n_pixels"]) <= 1e-3 * ev[key]["n_pixels"], key
        assert close(gt[key]["miou"], ev[key]["miou"]), key
        assert close(gt[key]["pixel_accuracy"], ev[key]["pixel_accuracy"]), key
    for key in ("precision", "recall", "flagged_rate"):
        assert abs(gt["noise_detector"][key] - ev["noise_detector"][key]) < 1e-3, key
    assert abs(gt["noise_detector"]["auroc"] - ev["noise_detector"]["auroc"]) < 0.01

    # and the report's accounting is exactly PseudoLabelQuality on the Predictor's outputs
    p = Predictor(model, device="cpu")
    q = PseudoLabelQuality(19, noise_threshold=0.5)
    for img in sorted((cs / "leftImg8bit" / "val").rglob("*.png")):
        pred = p.predict([read_image(img)])[0]
        g = cv2.imread(str(cs / "gtFine" / "val" / img.parent.name /
                           img.name.replace("leftImg8bit", "gtFine_labelTrainIds")), cv2.IMREAD_UNCHANGED)
        q.update(pred.raw_label, pred.label, g)
    s = q.summary()
    assert gt["raw"]["miou"] == s["raw"]["miou"] and gt["refined"]["per_class_iou"] == s["refined"]["per_class_iou"]


@pytest.mark.slow
def test_shards_are_disjoint_and_their_union_is_a_single_run(exported_model, tmp_path):
    inp = tmp_path / "in"
    rels = render_folder(inp, 30, seed=3)
    single = tmp_path / "single"
    label(inp, exported_model, single)
    out = tmp_path / "sharded"
    procs = [subprocess.Popen([sys.executable, "-m", "prnseg", "label", str(inp), "--model", str(exported_model),
                               "--out", str(out), "--no-progress", "--shard", f"{i}/2", "--workers", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    parts = [{r["path"] for r in manifest(out, f"manifest.shard-{i}-of-2.jsonl")} for i in range(2)]
    assert parts[0] and parts[1] and not parts[0] & parts[1] and parts[0] | parts[1] == set(rels)
    for i in range(2):
        rep = json.loads((out / f"report.shard-{i}-of-2.json").read_text())
        assert rep["shard"] == {"index": i, "count": 2} and rep["counts"]["ok"] == len(parts[i])
    assert tree(out) == tree(single)
    # an unsharded run afterwards has nothing left to do and reports the union
    again = label(inp, exported_model, out)
    assert f"labelled 0 images, 0 failed, {len(rels)} already done" in again.stdout
    assert json.loads((out / "report.json").read_text())["counts"]["ok"] == len(rels)
    assert (out / "train.txt").read_text() == (single / "train.txt").read_text()


def test_settings_of_a_folder_are_kept(exported_model, tmp_path):
    inp = tmp_path / "in"
    render_folder(inp, 3)
    out = tmp_path / "out"
    label(inp, exported_model, out, "--ignore-noisy")
    proc = label(inp, exported_model, out, check=False)
    assert proc.returncode == 2
    assert "was labelled with other settings (ignore_noisy True -> False)" in proc.stderr
    opts = LabelOptions(inp, out, exported_model, ignore_noisy=True)
    from prnseg.model_spec import load_model_spec

    check_settings(opts, load_model_spec(exported_model))  # the same options resume


def test_next_command_names_the_config_export_recorded_as_shipped(tmp_path):
    from prnseg.serve.label_cli import train_config

    for ckpt, want in (({"config": "synthetic_night", "config_shipped": True, "arch": "tiny"}, "synthetic_night"),
                       ({"config": "my_experiment", "config_shipped": False, "arch": "tiny"}, "synthetic"),
                       ({"config": "synthetic_night", "arch": "mit_b5"}, "gta2cityscapes")):  # an older export
        (tmp_path / "model.json").write_text(json.dumps({"checkpoint": ckpt}))
        assert train_config(tmp_path) == want


@pytest.mark.slow
def test_output_folder_is_a_training_dataset(prn_checkpoint, synth_root, tmp_path):
    from prnseg.export import export_model
    from prnseg.serve.predictor import noise_level
    from prnseg.training.data.datasets import build_dataset

    inp = tmp_path / "in"
    rels = render_folder(inp, 6, hw=(128, 256), seed=7)
    (inp / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    # the PRN's mask: the barely trained test model's confidence is near uniform, so 1 - confidence
    # would flag every pixel and leave no label to train on
    model = export_model(prn_checkpoint, tmp_path / "model", sizes=["128x256"], noise_from="prn", progress=False)
    proc = label(inp, model, out, "--ignore-noisy", "--noise-threshold", "0.6", "--save", "noise_prob,color",
                 check=False)
    assert proc.returncode == 1 and "next: prnseg train" in proc.stdout and "data.source.kind=folder" in proc.stdout
    assert (out / "images").resolve() == inp.resolve()
    ds = build_dataset("folder", out, split="train")
    assert len(ds) == len(rels) and ds.has_labels  # the failed image is not listed
    for i, rel in enumerate(sorted(rels)):
        key = rel.rsplit(".", 1)[0]
        img, lab = ds.load_raw(i)
        prob = cv2.imread(str(out / "noise_prob" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        noise = cv2.imread(str(out / "noise" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(noise == 255, prob >= noise_level(0.6))
        assert np.array_equal(lab == 255, noise == 255) and (lab[noise == 0] < 19).all()
        assert cv2.imread(str(out / "color" / f"{key}.png")).shape == img.shape
    # prnseg train reads it as its (labelled) source
    args = tiny_train_args(synth_root, tmp_path / "run", "source_only", iters=1,
                           extra=("data.source.kind=folder", f"data.source.root={out}"))
    run_cli(*args)
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.slow
def test_bad_arguments_are_one_line_errors(exported_model, tmp_path):
    proc = label(tmp_path / "missing", exported_model, tmp_path / "out", check=False)
    assert proc.returncode == 2 and "input folder not found" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = label(tmp_path / "empty", exported_model, tmp_path / "out", check=False)
    assert proc.returncode == 2 and "no images" in proc.stderr
    proc = label(tmp_path / "empty", tmp_path / "nomodel", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "model directory not found" in proc.stderr
    proc = label(tmp_path / "empty", exported_model, tmp_path / "out", "--save", "colour", check=False)
    assert proc.returncode == 2 and "--save: unknown output(s) colour" in proc.stderr
    for p in (proc,):
        assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ray_engine_writes_the_same_bytes(exported_model, tmp_path):
    pytest.importorskip("ray")
    inp = tmp_path / "in"
    render_folder(inp, 10, seed=5)
    (inp / "bad.png").write_text("nope")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert label(inp, exported_model, local, check=False).returncode == 1
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = run_cli("label", inp, "--model", exported_model, "--out", distributed, "--no-progress", "--engine", "ray",
                   env=env, timeout=300, check=False)
    assert proc.returncode == 1 and "10/11 images labelled" in proc.stdout, proc.stderr
    assert tree(distributed) == tree(local)
    assert [r["path"] for r in manifest(distributed)] == [r["path"] for r in manifest(local)]
    assert manifest(distributed, "failures.jsonl")[0]["path"] == "bad.png"
    assert json.loads((distributed / "report.json").read_text())["run"]["backend"] == "ray"


def test_a_batch_that_fails_is_rerun_image_by_image_so_only_the_bad_image_fails():
    from prnseg.serve.pipeline import infer_isolating

    class Fake:
        calls = 0

        def run_batch(self, batch):
            Fake.calls += 1
            if (batch == 99).any():
                raise RuntimeError("bad image")
            return {"label": batch[:, :1, :1, 0]}

    entries = [(f"img{i}", np.full((2, 2, 3), 99 if i == 1 else i, np.uint8)) for i in range(3)]
    failed = []
    runs = infer_isolating(Fake(), entries, 4, lambda e, exc: failed.append((e[0], str(exc))))
    assert failed == [("img1", "bad image")] and Fake.calls == 4  # the batch, then each image
    assert [(idx, [e[0] for e in group]) for _, idx, group in runs] == [([0], ["img0"]), ([0], ["img2"])]
    Fake.calls, failed = 0, []
    assert infer_isolating(Fake(), entries[1:2], 4, lambda e, exc: failed.append(e[0])) == []
    assert failed == ["img1"] and Fake.calls == 1  # a lone image is not run twice


@pytest.mark.slow
def test_tta_labels_a_folder_reports_it_and_is_not_mixed_with_a_plain_run(exported_model, synth_root, tmp_path):
    cs = synth_root / "cityscapes"
    out = tmp_path / "tta"
    proc = label(cs / "leftImg8bit" / "val", exported_model, out, "--tta", "--gt", cs / "gtFine" / "val")
    assert "test-time augmentation" in proc.stdout and "raw mIoU" in proc.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["options"]["tta"] is True and rep["options"]["noise_threshold"] == 0.5
    assert rep["options"]["logit_adjustment"] == 0.25          # the model records its class prior
    assert rep["counts"]["ok"] == 4 and rep["gt"]["n_images"] == 4
    settings = json.loads((out / "label.json").read_text())
    assert settings["tta"] is True and settings["logit_adjustment"] == 0.25
    again = label(cs / "leftImg8bit" / "val", exported_model, out, check=False)
    assert again.returncode == 2 and "tta True -> False" in again.stderr
    other_tau = label(cs / "leftImg8bit" / "val", exported_model, out, "--tta", "--logit-adjust", "0", check=False)
    assert other_tau.returncode == 2 and "logit_adjustment 0.25 -> 0.0" in other_tau.stderr
    no_tta = label(cs / "leftImg8bit" / "val", exported_model, tmp_path / "y", "--logit-adjust", "0.5", check=False)
    assert no_tta.returncode == 2 and "add --tta" in no_tta.stderr
    bad = label(cs / "leftImg8bit" / "val", exported_model, tmp_path / "x", "--tta", "--precision", "fp16",
                check=False)
    assert bad.returncode == 2 and "--tta runs the exported fp32 segmenter.onnx" in bad.stderr
    assert not (tmp_path / "x").exists()
