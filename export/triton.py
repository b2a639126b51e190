"""A Triton Inference Server model repository for the pseudo-labeler.

``DIR/triton/<model>/config.pbtxt`` + ``DIR/triton/<model>/1/model.plan`` (platform
``tensorrt_plan``) when engines were built, else ``1/model.onnx`` (``onnxruntime_onnx``). Triton
loads one plan per model and batches only identical shapes, so each size bucket is its own model
(``<name>`` for a single bucket, ``<name>_<H>x<W>`` for several); ``max_batch_size`` and the dims
(batch excluded) are the engine profile's, so Triton never sends a batch the plan cannot run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from prnseg.errors import PrnsegError
from prnseg.model_spec import PSEUDOLABELER_OUTPUTS, safe_name

TRITON_DIR = "triton"
MAX_QUEUE_DELAY_US = 100


class TritonConfigError(PrnsegError):
    """A config.pbtxt does not parse."""


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes Triton should try to form: half and full ``max_batch`` (just it for 1-2)."""
    return sorted({max(1, max_batch // 2), max_batch}) if max_batch > 2 else [max_batch]


def model_names(name: str, buckets: list[tuple[int, int]]) -> list[str]:
    safe = safe_name(name, "pseudolabeler")
    return [safe] if len(buckets) == 1 else [f"{safe}_{h}x{w}" for h, w in buckets]


def config_text(model: str, platform: str, bucket: tuple[int, int], max_batch: int, gpu: bool) -> str:
    h, w = bucket
    outputs = ",\n".join(
        f'  {{\n    name: "{o}"\n    data_type: TYPE_UINT8\n    dims: [ {h}, {w} ]\n  }}'
        for o in PSEUDOLABELER_OUTPUTS)
    preferred = ", ".join(map(str, preferred_batch_sizes(max_batch)))
    text = (
        f'name: "{model}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch}\n"
        "input [\n"
        f'  {{\n    name: "image"\n    data_type: TYPE_UINT8\n    dims: [ {h}, {w}, 3 ]\n  }}\n'
        "]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n"
        "}\n"
    )
    if gpu:
        text += "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]\n"
    return text


def write_triton_repository(model_dir: Path, doc: dict) -> list[Path]:
    """Write ``model_dir/triton`` for the model described by ``doc`` (model.json); returns the configs."""
    model_dir = Path(model_dir)
    buckets = [(b["height"], b["width"]) for b in doc["input"]["buckets"]]
    max_batch = int(doc["input"]["max_batch"])
    plans = {(e["bucket"]["height"], e["bucket"]["width"]): e for e in doc["artefacts"].get("tensorrt") or []}
    repo = model_dir / TRITON_DIR
    if repo.exists():
        shutil.rmtree(repo)
    written = []
    for model, bucket in zip(model_names(doc.get("name", "pseudolabeler"), buckets), buckets):
        version = repo / model / "1"
        version.mkdir(parents=True)
        if bucket in plans:
            src, dst, platform = model_dir / plans[bucket]["file"], version / "model.plan", "tensorrt_plan"
            batch = int(plans[bucket]["max_batch"])
        else:
            src, dst = model_dir / doc["artefacts"]["pseudolabeler"]["file"], version / "model.onnx"
            platform, batch = "onnxruntime_onnx", max_batch
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        cfg = repo / model / "config.pbtxt"
        cfg.write_text(config_text(model, platform, bucket, batch, gpu=platform == "tensorrt_plan"))
        written.append(cfg)
    return written


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z_][A-Za-z0-9_]*)|(-?\d+(?:\.\d+)?))')


def _tokens(text: str):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TritonConfigError(f"config.pbtxt: cannot parse at character {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        comment, string, punct, ident, number = m.groups()
        if comment:
            continue
        if string is not None:
            out.append(("str", string[1:-1]))
        elif punct:
            out.append(("p", punct))
        elif ident:
            out.append(("id", ident))
        elif number is not None:
            out.append(("num", float(number) if "." in number else int(number)))
    return out


def parse_pbtxt(text: str) -> dict:
    """Strict parser for the protobuf text format subset Triton configs use.

    Messages become dicts, ``key: [ ... ]`` lists; a field repeated as ``key { }`` blocks becomes
    a list. Enum identifiers (``TYPE_UINT8``) stay strings. Anything else raises TritonConfigError.
    """
    toks = _tokens(text)
    i = 0

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def take(kind=None, value=None):
        nonlocal i
        tok = peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise TritonConfigError(f"config.pbtxt: expected {value or kind}, got {tok[1]!r} (token {i})")
        i += 1
        return tok[1]

    def scalar():
        kind, value = peek()
        if kind in ("str", "num", "id"):
            take()
            return value
        raise TritonConfigError(f"config.pbtxt: expected a value, got {value!r} (token {i})")

    def value():
        if peek() == ("p", "{"):
            take("p", "{")
            return message("}")
        return scalar()

    def listing():
        take("p", "[")
        items = []
        while peek() != ("p", "]"):
            items.append(value())
            if peek() == ("p", ","):
                take("p", ",")
        take("p", "]")
        return items

    def message(end):
        out: dict = {}
        while peek() != ("p", end):
            if end is None and peek()[0] is None:
                break
            key = take("id")
            if peek() == ("p", ":"):
                take("p", ":")
                val = listing() if peek() == ("p", "[") else value()
            elif peek() == ("p", "{"):
                val = value()
            elif peek() == ("p", "["):
                val = listing()
            else:
                raise TritonConfigError(f"config.pbtxt: field {key} has no value (token {i})")
            if key in out:
                prev = out[key]
                out[key] = (prev if isinstance(prev, list) else [prev]) + (val if isinstance(val, list) else [val])
            else:
                out[key] = val
            if peek() == ("p", ","):
                take("p", ",")
        if end is not None:
            take("p", end)
        return out

    return message(None)
