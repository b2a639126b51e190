"""``bench.json``, ``bench.md`` and the printed summary.

Both files are rewritten atomically after every step (``Results.save``), so an interrupted run
keeps what it measured and says it is incomplete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from prnseg import __version__
from prnseg.bench.machine import load_average
from prnseg.bench.progress import fmt_s
from prnseg.bench.settings import Settings


@dataclass
class Results:
    settings: Settings
    machine: dict
    inference: list[dict] = field(default_factory=list)
    exports: list[dict] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    complete: bool = False

    def doc(self) -> dict:
        s = self.settings
        return {
            "format": "prnseg-bench", "prnseg": __version__, "complete": self.complete,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "wall_s": round(time.time() - self.started, 1),
            "machine": {**self.machine, "load_average_now": load_average()},
            "settings": {"device": s.device, "archs": s.archs if s.model is None else None,
                         "model": str(s.model) if s.model else None,
                         "weights": "random (untrained)" if s.model is None else "the exported model's",
                         "sizes": [f"{h}x{w}" for h, w in s.sizes], "batches": s.batches,
                         "iters": s.iters or "auto", "warmup": s.warmup, "images": s.images,
                         "backends": s.backends, "fp16": s.fp16, "quick": s.quick,
                         "train": {"arch": s.train_arch, "crop": s.train_crop, "steps": s.train_steps} if s.train
                         else None},
            "definitions": {
                "engine": "pseudo-labelling graph alone on pre-decoded bucket-sized uint8 batches; host->device "
                          "copy and uint8 outputs back to the host included; warm-up excluded; latency per batch",
                "end_to_end": "prnseg label pipeline on PNG files (2x the bucket size): decode + resize + infer + "
                              "encode + atomic write of labels/noise/confidence; images/s over the run, model "
                              "loading excluded",
                "parity": "agreement of each backend's uint8 outputs with the reference on the same inputs "
                          "(synthetic target-style scenes), in % of pixels",
            },
            "inference": self.inference, "exports": self.exports, "training": self.training, "notes": self.notes,
        }

    def save(self) -> None:
        from prnseg.atomic import atomic_write_bytes

        doc = self.doc()
        self.settings.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.settings.out / "bench.json", (json.dumps(doc, indent=2) + "\n").encode())
        atomic_write_bytes(self.settings.out / "bench.md", render_markdown(doc).encode())


def _cell(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_markdown(doc: dict) -> str:
    m = doc["machine"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in m["gpus"]) or "none"
    v = m["versions"]
    lines = [
        "# prnseg bench" + ("" if doc["complete"] else " (incomplete: the run was interrupted or is in progress)"),
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores_usable']} usable cores of {m['cpu_cores_logical']}, "
        f"{m['ram_gb']} GB RAM; GPU: {gpus}; device used: {m['device']}.  ",
        f"Versions: prnseg {v['prnseg']}, torch {v['torch']}, onnxruntime {v['onnxruntime']} "
        f"(providers: {', '.join(m['onnxruntime_providers'])}), tensorrt {v['tensorrt']}.  ",
        f"Load average at start / end: {m['load_average_start']} / {m['load_average_now']}; "
        f"total wall time {fmt_s(doc['wall_s'])}.  ",
        f"Weights: {doc['settings']['weights']}.",
        "",
        "## Inference",
        "",
        "| model | size (HxW) | batch | backend | precision | runs on | engine median ms | engine p90 ms | "
        "engine img/s | end-to-end img/s | label agree % | noise agree % | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["inference"]:
        e, e2e, p = r.get("engine") or {}, r.get("end_to_end") or {}, r.get("parity") or {}
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        if r.get("is_reference"):
            status = "ok (parity reference)"
        status = status.replace("|", "\\|")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['backend']} | {r['precision']} | "
            f"{r.get('runs_on') or '-'} | {_cell(e.get('latency_ms_median'))} | {_cell(e.get('latency_ms_p90'))} | "
            f"{_cell(e.get('images_per_s'), '{:.2f}')} | {_cell(e2e.get('images_per_s'), '{:.2f}')} | "
            f"{_cell(p.get('label_agreement_pct'), '{:.3f}')} | {_cell(p.get('noise_agreement_pct'), '{:.3f}')} | "
            f"{status} |")
    if doc["exports"]:
        lines += ["", "## Exports (prnseg export)", "", "| model | seconds | pseudolabeler.onnx MB | "
                  "pseudolabeler_fp16.onnx MB | export parity gate, label agreement % |", "|---|---|---|---|---|"]
        for x in doc["exports"]:
            mb = x.get("files_mb", {})
            gate = ", ".join(f"{k} {v['label_agreement_pct']:.3f}" for k, v in x.get("export_parity_gate", {}).items())
            lines.append(f"| {x['model']} | {_cell(x.get('seconds'))} | {_cell(mb.get('pseudolabeler.onnx'))} | "
                         f"{_cell(mb.get('pseudolabeler_fp16.onnx'))} | {gate or '-'} |")
    t = doc["training"]
    if t:
        lines += ["", "## Training step", ""]
        if t.get("status") != "ok":
            lines.append(f"{t.get('status')}: {t.get('reason', '')}")
        else:
            lines += [f"{t['arch']} + DAFormer head (config {t['config']}), {t['crop']}x{t['crop']} crops, batch "
                      f"{t['batch']}, {t['steps']} steps per mode on {t['device']} (amp: {t['amp']}); memory: "
                      f"{t['memory_kind']}.",
                      "", "| mode | median step s | peak memory MB |", "|---|---|---|"]
            for mode, r in t["modes"].items():
                lines.append(f"| {mode} | {_cell(r.get('median_step_s'), '{:.3f}')} | "
                             f"{_cell(r.get('peak_memory_mb'), '{:.0f}')} |")
            lines += ["", f"Step-time ratio prn / self_training: {_cell(t.get('step_time_ratio'), '{:.2f}')}; "
                          f"peak-memory ratio: {_cell(t.get('memory_ratio'), '{:.2f}')}."]
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    d = doc["definitions"]
    lines += ["", "Definitions: engine = " + d["engine"] + ". End-to-end = " + d["end_to_end"] + ". Parity = "
              + d["parity"] + ".", ""]
    return "\n".join(lines)


def print_summary(results: Results) -> None:
    doc = results.doc()
    for r in doc["inference"]:
        e, e2e, p = r.get("engine") or {}, r.get("end_to_end") or {}, r.get("parity") or {}
        if r["status"] != "ok":
            print(f"{r['model']} b{r['batch']} {r['backend']} {r['precision']}: {r['status']}"
                  + (f" ({r['reason']})" if r.get("reason") else ""))
            continue
        e2e_txt = f", end to end {e2e['images_per_s']:.2f} img/s" if e2e.get("images_per_s") else ""
        print(f"{r['model']} b{r['batch']} {r['backend']} {r['precision']}: engine {e['latency_ms_median']:.1f} ms "
              f"median ({e['images_per_s']:.2f} img/s){e2e_txt}; label agreement {p['label_agreement_pct']:.3f}% "
              f"vs {p.get('reference')}")
    t = doc["training"]
    if t and t.get("status") == "ok":
        m = t["modes"]
        print(f"training {t['arch']} {t['crop']}px batch 2+2: self_training {m['self_training']['median_step_s']:.3f} s"
              f"/step, prn {m['prn']['median_step_s']:.3f} s/step (ratio {t['step_time_ratio']:.2f}); peak memory "
              f"{m['self_training']['peak_memory_mb']:.0f} vs {m['prn']['peak_memory_mb']:.0f} MB")
    elif t:
        print(f"training: {t.get('status')}: {t.get('reason')}")
    out = results.settings.out
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'} ({fmt_s(doc['wall_s'])})")
