"""Gradio, imported with its usage analytics off: the setting is read at import, so every demo
module that needs Gradio takes it from here (``from prnseg.demo._gr import gr``)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (after the setting above)

__all__ = ["gr"]
