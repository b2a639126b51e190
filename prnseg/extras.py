"""The optional dependencies (pip extras) behind each capability, and the one-line error a missing
one gets: ``pip install prnseg`` alone is the torch-free runtime, so training, export and the demo
on such an install must say which extra to add, not end in a ``ModuleNotFoundError`` traceback."""

from __future__ import annotations

import importlib.util

from prnseg.errors import PrnsegError

#: the modules of an extra (pyproject.toml's optional-dependencies) that a command checks up front;
#: the demo and ``--engine ray`` check theirs where they import them
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers"),
    "export": ("torch", "transformers", "onnx"),
}
#: the smallest extra that brings a module, for an import that fails deeper down
MODULE_EXTRA = {"torch": "train", "transformers": "train", "onnx": "export", "onnxscript": "export",
                "onnxconverter_common": "export", "gradio": "demo", "ray": "ray"}


class MissingExtraError(PrnsegError):
    """A capability's optional dependency is not installed; the message names the extra to add."""


def _message(what: str, missing: list[str], extra: str) -> str:
    verb = "is" if len(missing) == 1 else "are"
    torch_first = (" (install torch first, the build for your machine: see the README's Install)"
                   if "torch" in missing else "")
    return f"{what} needs {', '.join(missing)}, which {verb} not installed: pip install 'prnseg[{extra}]'{torch_first}"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # an import hook refusing it, or a module without a spec
        return False


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable. Called after
    a command's inputs are checked (a mistake in them is reported first, also where the extra is
    missing) and before anything heavy loads (``find_spec`` imports nothing)."""
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtraError(_message(what, missing, extra))


def missing_extra(exc: BaseException, what: str) -> MissingExtraError | None:
    """The one-line error for an import of an extra's module that failed deeper down (a path no
    :func:`require` guards), or None when ``exc`` is something else."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    top = (exc.name or "").split(".")[0]
    extra = MODULE_EXTRA.get(top)
    return MissingExtraError(_message(what, [top], extra)) if extra else None
