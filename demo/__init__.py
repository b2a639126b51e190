"""The Gradio web demo on top of ``prnseg.serve`` (``prnseg demo``).

This module stays import-light (no Gradio) so that other modes can use its paths; the app itself
is ``prnseg.demo.app.build_app``, also reachable here as ``prnseg.demo.build_app``.
"""

from pathlib import Path

#: Where ``prnseg quickstart`` writes its exported model; ``prnseg demo`` uses it without --model.
QUICKSTART_MODEL_DIR = Path("prnseg-quickstart") / "model"

#: Bundled example images (synthetic target-domain scenes, day and night).
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

__all__ = ["EXAMPLES_DIR", "QUICKSTART_MODEL_DIR", "build_app", "launch"]


def __getattr__(name):
    if name in ("build_app", "launch"):
        from prnseg.demo import app

        return getattr(app, name)
    raise AttributeError(f"module 'prnseg.demo' has no attribute {name!r}")
