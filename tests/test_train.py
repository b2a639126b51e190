"""Training, resume and evaluation through the real CLI on a tiny synthetic benchmark."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from prnseg.errors import PrnsegError
from prnseg.training.checkpoint import load_checkpoint, save_checkpoint
from prnseg.training.config import load_config

from conftest import run_cli, tiny_train_args

EXPECTED_TERMS = {
    "source_only": {"source"},
    "self_training": {"source", "target", "pseudo_weight"},
    "prn": {"source", "target", "prn_ref", "prn_noise", "contrast_src", "contrast_tgt", "noisy_frac"},
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["source_only", "self_training", "prn"])
def test_each_mode_trains_logs_every_term_and_checkpoints(synth_root, tmp_path, mode):
    out = tmp_path / mode
    proc = run_cli(*tiny_train_args(synth_root, out, mode=mode, iters=2))
    assert "next: prnseg eval" in proc.stdout
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["meta"]["mode"] == mode
    assert ("teacher" in state) == (mode != "source_only")
    assert ("prn" in state) == (mode == "prn")
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert EXPECTED_TERMS[mode] <= set(rows[0])
    assert (out / "config.yaml").is_file()


@pytest.mark.slow
def test_prn_noise_mask_only_variant_trains(synth_root, tmp_path):
    out = tmp_path / "mask_only"
    run_cli(*tiny_train_args(synth_root, out, mode="prn", iters=2, extra=["prn.use_refined_labels=false"]))
    assert load_checkpoint(out / "last.pt")["config"]["prn"]["use_refined_labels"] is False


@pytest.mark.slow
def test_prn_learning_the_augmented_teacher_on_the_target_trains(synth_root, tmp_path):
    out = tmp_path / "tta"
    run_cli(*tiny_train_args(synth_root, out, mode="prn", iters=2,
                             extra=["prn.refine_signal=target_tta", "prn.noise_signal=target_tta"]))
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["prn_ref"]) > 0 and float(row["prn_noise"]) > 0
    cfg = load_checkpoint(out / "last.pt")["config"]["prn"]
    assert (cfg["refine_signal"], cfg["noise_signal"]) == ("target_tta", "target_tta")


@pytest.mark.slow
def test_self_training_on_the_augmented_teacher_s_labels_trains(synth_root, tmp_path):
    out = tmp_path / "st_tta"
    run_cli(*tiny_train_args(synth_root, out, mode="self_training", iters=2, extra=["uda.pseudo_label_tta=true"]))
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["target"]) > 0
    assert load_checkpoint(out / "last.pt")["config"]["uda"]["pseudo_label_tta"] is True


@pytest.mark.slow
def test_prn_target_consistency_without_features_trains_evaluates_and_exports(synth_root, tmp_path):
    """The noise head learning from target label consistency, reading only class probabilities."""
    import numpy as np
    import onnxruntime as ort

    from prnseg.export import export_model
    from prnseg.image_io import list_images, read_image
    from prnseg.model_spec import PSEUDOLABELER_OUTPUTS, load_model_spec
    from prnseg.training.data.transforms import build_test_pipeline
    from prnseg.training.evaluate import image_pseudo_labels
    from prnseg.training.loading import load_checkpoint_model
    from prnseg.training.prn_step import PRNStep

    out = tmp_path / "consistency"
    run_cli(*tiny_train_args(synth_root, out, mode="prn", iters=2,
                             extra=["prn.noise_signal=target_consistency", "prn.use_features=false"]))
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["prn_noise"]) > 0
    cfg = load_checkpoint(out / "last.pt")["config"]["prn"]
    assert cfg["noise_signal"] == "target_consistency" and cfg["use_features"] is False
    run_cli("eval", str(out / "last.pt"), "--data", str(synth_root / "cityscapes"), "--json", str(tmp_path / "m.json"))
    assert "auroc" in json.loads((tmp_path / "m.json").read_text())["pseudo_labels"]["noise_detector"]

    model_dir = export_model(out / "last.pt", tmp_path / "model", sizes=["128x256"], noise_from="prn", progress=False)
    spec = load_model_spec(model_dir)
    image_path = list_images(synth_root / "cityscapes" / "leftImg8bit" / "val")[0]
    rgb = read_image(image_path)
    sess = ort.InferenceSession(str(spec.artefact_path("pseudolabeler")), providers=["CPUExecutionProvider"])
    o = dict(zip(PSEUDOLABELER_OUTPUTS, sess.run(None, {"image": rgb[None]})))
    teacher, prn, cfg = load_checkpoint_model(out / "last.pt", "teacher")
    _, written = image_pseudo_labels(teacher, prn, PRNStep.from_config(cfg), rgb, build_test_pipeline(size=None),
                                     torch.device("cpu"), rgb.shape[:2])
    assert o["noise_prob"].dtype == np.uint8                   # probability x 255, rounded
    assert np.abs(o["noise_prob"][0] / 255.0 - written.noise_prob.numpy()).max() < 0.6 / 255


@pytest.mark.slow
def test_training_never_reads_target_train_labels(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    shutil.rmtree(root / "cityscapes" / "gtFine" / "train")
    run_cli(*tiny_train_args(root, tmp_path / "run", mode="prn", iters=2))


def _cfg(root, iters, mode="prn"):
    return load_config("synthetic", [
        f"data.source.root={root / 'gta'}", f"data.target.root={root / 'cityscapes'}",
        "data.source.size=[128,256]", "data.target.size=[128,256]", "data.crop=[128,128]",
        "data.workers=0", f"uda.mode={mode}", f"train.iters={iters}", "train.eval_every=0",
        "train.checkpoint_every=100", "prn.start_iter=1", "uda.contrastive.max_samples=256"])


@pytest.mark.slow
def test_resume_continues_exactly(synth_root, tmp_path):
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    straight = UDATrainer(_cfg(synth_root, 4), tmp_path / "a", progress=False)
    straight.fit()

    first = UDATrainer(_cfg(synth_root, 4), tmp_path / "b", progress=False)
    batches = iter(first.build_loader())
    for _ in range(2):
        first.train_step(next(batches))
    first.save()
    resumed = UDATrainer(_cfg(synth_root, 4), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 2
    resumed.fit()
    for name in ("student", "prn"):
        a = getattr(straight, name).state_dict()
        b = getattr(resumed, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    ta, tb = straight.teacher.state_dict()["model"], resumed.teacher.state_dict()["model"]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.slow
def test_resume_refuses_a_different_model_config(synth_root, tmp_path):
    run_cli(*tiny_train_args(synth_root, tmp_path / "r", mode="prn", iters=1))
    args = tiny_train_args(synth_root, tmp_path / "r", mode="self_training", iters=2) + ["--resume"]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2 and "different 'uda' config" in proc.stderr
    assert "uda.mode: 'prn' -> 'self_training'" in proc.stderr
    args = tiny_train_args(synth_root, tmp_path / "r", mode="prn", iters=2, extra=("prn.noise_threshold=0.7",))
    proc = run_cli(*args, "--resume", check=False)
    assert proc.returncode == 2 and "different 'prn' config (prn.noise_threshold: 0.5 -> 0.7)" in proc.stderr


@pytest.mark.slow
def test_a_checkpoint_from_before_a_config_key_existed_resumes_at_that_keys_default(synth_root, tmp_path):
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    first = UDATrainer(_cfg(synth_root, 2, mode="self_training"), tmp_path / "r", progress=False)
    first.train_step(next(iter(first.build_loader())))
    path = first.save()
    state = load_checkpoint(path)
    del state["config"]["uda"]["pseudo_label_logit_adjustment"]              # as an older prnseg wrote it
    del state["class_marginal"]
    save_checkpoint(state, path)
    assert UDATrainer(_cfg(synth_root, 2, mode="self_training"), tmp_path / "r", resume=True, progress=False).step == 1
    cfg = _cfg(synth_root, 2, mode="self_training")
    cfg.uda.pseudo_label_logit_adjustment = 0.5
    with pytest.raises(PrnsegError, match=r"pseudo_label_logit_adjustment: \(not in the checkpoint, so 0.0\) -> 0.5"):
        UDATrainer(cfg, tmp_path / "r", resume=True, progress=False)


@pytest.mark.slow
def test_sigkill_then_resume(synth_root, tmp_path):
    out = tmp_path / "killed"
    args = tiny_train_args(synth_root, out, mode="prn", iters=40)
    proc = subprocess.Popen([sys.executable, "-m", "prnseg", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if (out / "last.pt").exists() and load_checkpoint(out / "last.pt")["step"] >= 3:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    step = load_checkpoint(out / "last.pt")["step"]  # never truncated: it loads whatever the kill hit
    assert 3 <= step < 40
    run_cli(*args, "--resume")
    assert load_checkpoint(out / "last.pt")["step"] == 40
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")], "a temporary checkpoint was left behind"


@pytest.fixture(scope="module")
def prn_checkpoint(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prn_run")
    run_cli(*tiny_train_args(synth_root, out, mode="prn", iters=2))
    return out / "last.pt"


@pytest.mark.slow
def test_eval_prints_and_writes_metrics(synth_root, prn_checkpoint, tmp_path):
    js = tmp_path / "m.json"
    proc = run_cli("eval", prn_checkpoint, "--data", synth_root / "cityscapes", "--json", js,
                   "--refine-sweep", "0,0.9,1.01")
    m = json.loads(js.read_text())
    assert 0.0 <= m["miou"] <= 1.0 and len(m["per_class_iou"]) == 19 and m["n_images"] == 4
    assert "mIoU (all)" in proc.stdout and "road" in proc.stdout
    pl = m["pseudo_labels"]
    assert {"raw", "refined", "noise_detector", "confidence_baseline"} <= set(pl)
    assert 0.0 <= pl["noise_detector"]["auroc"] <= 1.0
    # the sweep writes with the same step: at the checkpoint's own threshold it is the written labels,
    # at 0 the PRN's argmax, above 1 the teacher's
    assert pl["rule"]["refine_min_confidence"] == 0.9
    assert pl["written_at"]["0.9"]["miou"] == pl["refined"]["miou"]
    assert pl["written_at"]["0"]["miou"] == pl["prn_argmax"]["miou"]
    assert pl["written_at"]["1.01"]["miou"] == pl["raw"]["miou"] and pl["written_at"]["1.01"]["relabelled"] == 0


@pytest.mark.slow
def test_eval_errors_are_one_line(synth_root, prn_checkpoint, tmp_path):
    proc = run_cli("eval", prn_checkpoint, "--data", tmp_path / "missing", check=False)
    assert proc.returncode == 2 and str(tmp_path / "missing") in proc.stderr
    assert proc.stderr.strip().count("\n") == 0

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    proc = run_cli("eval", junk, "--data", synth_root / "cityscapes", check=False)
    assert proc.returncode == 2 and "not a checkpoint written by prnseg train" in proc.stderr

    state = load_checkpoint(prn_checkpoint)
    state["config"]["model"]["arch"] = "mit_b0"  # weights of a tiny model labelled as another model
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    proc = run_cli("eval", other, "--data", synth_root / "cityscapes", check=False)
    assert proc.returncode == 2 and "do not fit the model" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_missing_dataset_root_is_one_line(tmp_path):
    args = tiny_train_args(tmp_path / "nowhere", tmp_path / "r", iters=1)
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2 and str(tmp_path / "nowhere" / "gta") in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(synth_root, tmp_path):
    """torchrun with the gloo backend: gradients all-reduced, replicas (student, EMA teacher, PRN)
    checked identical at every checkpoint, rank 0 writes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    args = tiny_train_args(synth_root, out, mode="prn", iters=2)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "prnseg", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2 and "prn" in state and "teacher" in state


@pytest.mark.slow
def test_imagenet_feature_distance_needs_and_uses_pretrained_weights(synth_root, tmp_path):
    from transformers import SegformerModel

    from prnseg.training.models.encoder import mit_config

    proc = run_cli(*tiny_train_args(synth_root, tmp_path / "nofd", iters=1,
                                    extra=["uda.feature_distance.enabled=true"]), check=False)
    assert proc.returncode == 2 and "model.pretrained" in proc.stderr

    torch.manual_seed(0)
    SegformerModel(mit_config("tiny")).save_pretrained(tmp_path / "mit")
    out = tmp_path / "fd"
    run_cli(*tiny_train_args(synth_root, out, mode="self_training", iters=2,
                             extra=["uda.feature_distance.enabled=true", f"model.pretrained={tmp_path / 'mit'}",
                                    "uda.feature_distance.classes=[0,1,2,8,10,13]"]))
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # the student starts from the ImageNet weights (distance 0) and moves away once it learns
    assert float(rows[0]["feature_distance"]) == 0.0 and float(rows[1]["feature_distance"]) > 0


@pytest.mark.slow
def test_warm_start_from_a_source_only_checkpoint(synth_root, prn_checkpoint, tmp_path):
    from prnseg.training.trainer import UDATrainer

    src = tmp_path / "src"
    run_cli(*tiny_train_args(synth_root, src, mode="source_only", iters=1))
    cfg = _cfg(synth_root, 2, mode="prn")
    cfg.train.init_from = str(src / "last.pt")
    trainer = UDATrainer(cfg, tmp_path / "warm", progress=False)
    saved = load_checkpoint(src / "last.pt")["student"]
    assert all(torch.equal(v, saved[k]) for k, v in trainer.student.state_dict().items())
    assert all(torch.equal(v, saved[k]) for k, v in trainer.teacher.model.state_dict().items())

    cfg.train.init_from = str(prn_checkpoint)
    cfg.model.head = "daformer" if cfg.model.head == "segformer" else "segformer"   # not the checkpoint's head
    with pytest.raises(Exception, match="init_from weights do not fit"):
        UDATrainer(cfg, tmp_path / "bad", progress=False)


@pytest.mark.slow
def test_logit_adjusted_self_training_resumes_exactly(synth_root, tmp_path):
    """uda.pseudo_label_logit_adjustment: the running class marginal is checkpointed, so a resumed
    run writes the same pseudo-labels as the uninterrupted one."""
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)

    def cfg():
        c = _cfg(synth_root, 4, mode="self_training")
        c.uda.pseudo_label_logit_adjustment = 0.25
        return c

    straight = UDATrainer(cfg(), tmp_path / "a", progress=False)
    straight.fit()
    first = UDATrainer(cfg(), tmp_path / "b", progress=False)
    batches = iter(first.build_loader())
    for _ in range(2):
        first.train_step(next(batches))
    first.save()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["class_marginal"]["marginal"] is not None
    resumed = UDATrainer(cfg(), tmp_path / "b", resume=True, progress=False)
    resumed.fit()
    assert torch.allclose(straight.class_marginal.marginal, resumed.class_marginal.marginal, rtol=0, atol=1e-12)
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_seed_shares_the_initial_weights_and_train_seed_keeps_the_data_order(synth_root, tmp_path):
    from prnseg.training.trainer import UDATrainer

    def trainer(seed, init_seed=-1):
        cfg = _cfg(synth_root, 2)
        cfg.train.seed, cfg.train.init_seed = seed, init_seed
        return UDATrainer(cfg, tmp_path / f"s{seed}i{init_seed}", progress=False)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    base, other, shared = trainer(0), trainer(1), trainer(1, init_seed=0)
    for name in ("student", "prn"):
        assert not same(getattr(base, name).state_dict(), getattr(other, name).state_dict())
        assert same(getattr(base, name).state_dict(), getattr(shared, name).state_dict())
    first = [next(iter(t.build_loader()))["source"]["img"] for t in (base, other, shared)]
    assert torch.equal(first[1], first[2]) and not torch.equal(first[0], first[2])
    assert torch.equal(torch.rand(3, generator=other.generator), torch.rand(3, generator=shared.generator))


def test_pseudo_label_margins_zero_the_target_weight_of_those_crop_rows(synth_root, tmp_path):
    from prnseg.training.trainer import UDATrainer

    cfg = _cfg(synth_root, 2, mode="self_training")
    cfg.uda.pseudo_margins = [4, 30, 0, 0]
    cfg.uda.jitter_apply_prob = cfg.uda.blur_apply_prob = 0.0
    trainer = UDATrainer(cfg, tmp_path / "run", progress=False)
    batch = next(iter(trainer.build_loader()))
    x_s, y_s, x_t = batch["source"]["img"], batch["source"]["gt"], batch["target"]["img"]
    b, _, h, w = x_t.shape
    pseudo = torch.zeros(b, h, w, dtype=torch.long)
    log = {}
    trainer._target_part(x_s, y_s, x_t, pseudo, torch.ones(b, h, w), None, None, log)
    assert float(log["pseudo_weight"]) == pytest.approx((h - 34) / h)
