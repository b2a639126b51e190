"""Segmentor (MiT + DAFormer/SegFormer heads), pretrained loading, PRN and ONNX export."""

from __future__ import annotations

import importlib.util
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import SegformerForSemanticSegmentation, SegformerModel  # noqa: E402

from prnseg.errors import ConfigError  # noqa: E402
from prnseg.training.models import (  # noqa: E402
    ENCODERS, HEADS, PRN, DAFormerHead, SegFormerMLPHead, Segmentor, SegOutput, apply_mit_norm_eps,
    create_model, create_prn, mit_config, pad_to_multiple,
)


def _norm(model: nn.Module, pattern: str) -> nn.LayerNorm:
    """The first encoder LayerNorm whose name matches (module names differ across transformers versions)."""
    return next(m for n, m in model.encoder.named_modules() if isinstance(m, nn.LayerNorm) and re.search(pattern, n))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("head", ["daformer", "segformer"])
def test_tiny_output_shapes(head):
    model = create_model("tiny", head, num_classes=7)
    assert isinstance(model.decode_head, HEADS[head])
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (2, 7, 16, 24)
    assert [tuple(f.shape) for f in out.features] == [
        (2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)
    ]
    assert out.decoder_features.shape == (2, model.decode_head.channels, 16, 24)
    model.eval()
    with torch.no_grad():
        logits = model(x).logits
        fused = model.decode_head.forward_features(model.encoder(x))
        assert torch.allclose(model.decode_head.classify(fused), logits)
        assert model.predict(x).shape == (2, 7, 64, 96)


def test_reference_widths_and_specs():
    assert ENCODERS["mit_b5"].depths == (3, 6, 40, 3)
    assert ENCODERS["mit_b0"].hidden_sizes == (32, 64, 160, 256)
    cfg = mit_config("mit_b2")
    assert list(cfg.num_attention_heads) == [1, 2, 5, 8] and list(cfg.sr_ratios) == [8, 4, 2, 1]
    assert cfg.layer_norm_eps == 1e-6 and cfg.drop_path_rate == 0.1
    head = DAFormerHead([64, 128, 320, 512], channels=256)
    assert head.fuse.bottleneck[0].in_channels == 1024 and head.fuse.bottleneck[0].kernel_size == (3, 3)
    pointwise, *separable = head.fuse.branches
    assert pointwise[0].kernel_size == (1, 1) and pointwise[0].out_channels == 256
    for branch, d in zip(separable, (6, 12, 18)):
        depthwise = branch[0][0]
        assert depthwise.dilation == (d, d) and depthwise.groups == depthwise.in_channels == 1024
        assert branch[1][0].kernel_size == (1, 1) and branch[1][0].out_channels == 256
    assert isinstance(SegFormerMLPHead([64, 128, 320, 512], channels=768).fuse[1], nn.BatchNorm2d)
    model = create_model("tiny", drop_path_rate=0.2)
    assert model.encoder.model.config.drop_path_rate == 0.2
    assert _norm(model, r"(layernorm_before|layer_norm_1)$").eps == 1e-6
    assert _norm(model, r"patch_embeddings.*layer_norm$").eps == 1e-5


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown encoder 'mit_b9'"):
        create_model("mit_b9")
    with pytest.raises(ConfigError, match="unknown decode head 'fcn'"):
        create_model("tiny", "fcn")


def test_check_input_shape_names_padded_size():
    model = create_model("tiny")
    with pytest.raises(ValueError, match=r"input 3x250x500 is not a multiple of 32; pad to 256x512"):
        model.check_input_shape(torch.zeros(1, 3, 250, 500))
    with pytest.raises(ValueError, match=r"pad to 256x512"):
        model(torch.zeros(1, 3, 250, 500))
    with pytest.raises(ValueError, match="B x C x H x W"):
        model.check_input_shape(torch.zeros(3, 64, 64))
    model.check_input_shape(torch.zeros(1, 3, 256, 512))


def test_pad_and_whole_image_inference():
    x = torch.randn(1, 3, 50, 70)
    padded, pad = pad_to_multiple(x, 32)
    assert padded.shape == (1, 3, 64, 96) and pad == (0, 26, 0, 14)
    assert torch.equal(padded[..., :50, :70], x)
    assert padded[..., 50:, :].abs().sum() == 0 and padded[..., :, 70:].abs().sum() == 0
    same, no_pad = pad_to_multiple(padded, 32)
    assert no_pad == (0, 0, 0, 0) and torch.equal(same, padded)

    model = create_model("tiny", "segformer", num_classes=5).eval()
    with torch.no_grad():
        out = model.inference(x)
        assert out.shape == (1, 5, 50, 70)
        manual = F.interpolate(model(F.pad(x, (0, 26, 0, 14))).logits, size=(64, 96), mode="bilinear",
                               align_corners=False)[..., :50, :70]
        assert torch.allclose(out, manual)
        aligned = torch.randn(1, 3, 64, 64)
        assert torch.allclose(model.inference(aligned), model.predict(aligned))


def _tiny_hf_encoder() -> SegformerModel:
    return SegformerModel(mit_config("tiny")).eval()


def test_pretrained_directory_matches_transformers(tmp_path):
    ref = _tiny_hf_encoder()
    ref.save_pretrained(tmp_path / "mit")
    model = create_model("tiny", pretrained=tmp_path / "mit").eval()
    loaded = model.encoder.model.state_dict()
    for key, value in ref.state_dict().items():
        assert torch.equal(loaded[key], value), key

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        unpatched = ref(pixel_values=x, output_hidden_states=True).hidden_states
        apply_mit_norm_eps(ref, 1e-6)
        expected = ref(pixel_values=x, output_hidden_states=True).hidden_states
        got = model(x).features
    assert len(got) == 4
    for g, e, u in zip(got, expected, unpatched):
        assert torch.equal(g, e)
        # The eps change (1e-5 -> 1e-6 in block/stage norms) is the only difference from stock transformers.
        assert torch.allclose(g, u, atol=1e-3)


def test_pretrained_from_full_segformer_checkpoint(tmp_path):
    full = SegformerForSemanticSegmentation(mit_config("tiny")).eval()
    full.save_pretrained(tmp_path / "seg")
    model = create_model("tiny", pretrained=str(tmp_path / "seg"))
    for key, value in full.segformer.state_dict().items():
        assert torch.equal(model.encoder.model.state_dict()[key], value), key


def test_pretrained_errors(tmp_path):
    _tiny_hf_encoder().save_pretrained(tmp_path / "tiny")
    with pytest.raises(ConfigError) as info:
        create_model("mit_b0", pretrained=tmp_path / "tiny")
    msg = str(info.value)
    assert "hidden_sizes=[16, 32, 64, 128]" in msg and "looks like tiny" in msg
    assert "'mit_b0' needs hidden_sizes=[32, 64, 160, 256]" in msg
    with pytest.raises(ConfigError, match="directory not found"):
        create_model("tiny", pretrained=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        create_model("tiny", pretrained=tmp_path / "empty")
    no_weights = tmp_path / "config_only"
    mit_config("tiny").save_pretrained(no_weights)
    with pytest.raises(ConfigError, match="cannot load its weights"):
        create_model("tiny", pretrained=no_weights)

    from safetensors.torch import load_file, save_file

    weights = tmp_path / "tiny" / "model.safetensors"
    state = load_file(weights)
    del state[sorted(state)[0]]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"lacks 1 encoder weights \(e\.g\. \S+\); is it a SegFormer"):
        create_model("tiny", pretrained=tmp_path / "tiny")


def _teacher_outputs(model: Segmentor, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return [f.detach() for f in out.features], out.logits.detach()


@pytest.mark.parametrize("train_mode", [True, False])
def test_prn_is_identity_at_init(train_mode):
    model = create_model("tiny", num_classes=6).eval()
    prn = create_prn(model, channels=16, num_blocks=3).train(train_mode)
    feats, logits = _teacher_outputs(model, torch.randn(2, 3, 64, 96))
    logits = logits * 50  # spread the classes so argmax ties cannot occur
    refined, noise = prn(feats, logits)
    assert refined.shape == (2, 6, 16, 24) and noise.shape == (2, 1, 16, 24)
    assert torch.equal(refined.argmax(1), logits.argmax(1))
    assert torch.allclose(refined, logits)

    full_res = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
    refined_full, noise_full = prn(feats, full_res)
    assert refined_full.shape == (2, 6, 16, 24) and noise_full.shape == (2, 1, 16, 24)
    expected = F.interpolate(full_res, size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(refined_full, expected)


def test_prn_without_features_reads_only_the_probabilities():
    model = create_model("tiny", num_classes=6).eval()
    prn = create_prn(model, channels=16, use_features=False).eval()
    assert prn.embed is None
    feats, logits = _teacher_outputs(model, torch.randn(2, 3, 64, 96))
    with torch.no_grad():
        prn.noise_head.bias.fill_(0.3)
        refined, noise = prn(feats, logits)
        other = prn([torch.randn_like(f) for f in feats], logits)
    assert refined.shape == (2, 6, 16, 24) and noise.shape == (2, 1, 16, 24)
    assert torch.allclose(refined, logits)                      # still the identity at init
    assert torch.equal(other[0], refined) and torch.equal(other[1], noise)
    with torch.no_grad():
        changed = prn(feats, logits.flip(1))
    assert not torch.allclose(changed[1], noise)                 # the probabilities do matter


def test_prn_max_softmax_prior_starts_as_one_minus_confidence_and_learns_a_correction():
    model = create_model("tiny", num_classes=6).eval()
    prn = create_prn(model, channels=16, noise_prior="max_softmax").train()
    feats, logits = _teacher_outputs(model, torch.randn(2, 3, 64, 96))
    logits = logits * 5
    refined, noise = prn(feats, logits)
    top = torch.softmax(logits, 1).amax(1, keepdim=True)
    assert torch.allclose(torch.sigmoid(noise), 1 - top, atol=1e-5)    # the teacher's confidence, exactly
    assert torch.allclose(refined, logits)
    target = (torch.rand_like(noise) > 0.5).float()                      # and the head can move it
    F.binary_cross_entropy_with_logits(noise, target).backward()
    assert prn.noise_head.weight.grad.abs().sum() > 0 and prn.prior_scale.grad is not None
    with pytest.raises(ValueError, match="noise_prior must be one of none, max_softmax"):
        create_prn(model, noise_prior="entropy")
    assert not hasattr(create_prn(model), "prior_scale")                # the method's PRN is unchanged


def test_prn_input_validation():
    prn = PRN([16, 32, 64, 128], num_classes=4, channels=8)
    feats = [torch.randn(1, c, 16 // s, 16 // s) for c, s in zip([16, 32, 64, 128], [1, 2, 4, 8])]
    with pytest.raises(ValueError, match="4 feature maps, got 3"):
        prn(feats[:3], torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="4-class logits, got 5"):
        prn(feats, torch.randn(1, 5, 16, 16))


def test_prn_gradients_stay_out_of_teacher():
    teacher = create_model("tiny", num_classes=5)
    prn = create_prn(teacher, channels=8)
    x = torch.randn(2, 3, 64, 64)
    out = teacher(x)
    feats = [f.detach() for f in out.features]
    refined, noise = prn(feats, out.logits.detach())
    target = torch.randint(0, 5, (2, 16, 16))
    loss = F.cross_entropy(refined, target) + F.binary_cross_entropy_with_logits(
        noise[:, 0], (refined.argmax(1) != target).float()
    )
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(f.grad is None and not f.requires_grad for f in feats)
    for name, p in prn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert prn.refine_head.weight.grad.abs().sum() > 0
    assert prn.noise_head.weight.grad.abs().sum() > 0
    assert prn.embed[0].weight.grad.abs().sum() > 0  # reached through the noise head at init


def test_param_groups():
    model = create_model("tiny", "daformer")
    prn = create_prn(model)
    groups = model.param_groups(6e-5, head_lr_mult=10, weight_decay=0.01, extra_heads=[prn])
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in [*model.parameters(), *prn.parameters()]}
    assert by_name["backbone"]["lr"] == pytest.approx(6e-5) and by_name["head"]["lr"] == pytest.approx(6e-4)
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0 and by_name["head"]["weight_decay"] == 0.01
    head_ids = {id(p) for p in by_name["head"]["params"]}
    assert id(prn.refine_head.weight) in head_ids and id(model.decode_head.classifier.weight) in head_ids
    ln = _norm(model, r"(layernorm_before|layer_norm_1)$")
    assert {id(ln.weight), id(ln.bias)} <= {id(p) for p in by_name["backbone_no_decay"]["params"]}
    bn = prn.blocks[0][1]
    assert id(bn.weight) in {id(p) for p in by_name["head_no_decay"]["params"]}
    torch.optim.AdamW(groups)


def test_autocast_forward_and_backward():
    model = create_model("tiny", "daformer", num_classes=4)
    prn = create_prn(model, channels=8)
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        refined, noise = prn([f.detach() for f in out.features], out.logits.detach())
        loss = out.logits.float().logsumexp(1).mean() + refined.float().mean() + noise.float().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.decode_head.parameters())


@pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="onnx and onnxruntime are needed to check the exported graph",
)
def test_onnx_export_keeps_layernorm_and_matches(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = create_model("tiny", "daformer").eval()
    x = torch.randn(1, 3, 64, 96)
    path = tmp_path / "segmentor.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["image"],
                      output_names=["logits", "f1", "f2", "f3", "f4", "decoder_features"])
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    n_layernorm = sum(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert ops.count("LayerNormalization") == n_layernorm > 0
    assert "ReduceMean" not in ops and "Pow" not in ops and "Sqrt" not in ops

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for name, g, r in zip(["logits", "f1", "f2", "f3", "f4", "decoder_features"], got,
                          [ref.logits, *ref.features, ref.decoder_features]):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0, err_msg=name)
