"""User-facing errors: one line naming the thing that is wrong and the fix.

``PRNSEG_DEBUG=1`` in the environment makes the CLI print the traceback behind that line too
(:func:`print_debug_traceback`), including the exception the one-liner replaced.
"""

import os
import sys
import traceback

DEBUG_ENV = "PRNSEG_DEBUG"


class PrnsegError(Exception):
    """Base class for errors the CLI prints as a single line (no traceback)."""


class DatasetError(PrnsegError):
    """A dataset root, image or label is missing, unreadable or inconsistent."""


class ImageReadError(PrnsegError):
    """An image file cannot be decoded; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(PrnsegError):
    """A config file or override is invalid."""


def debug_enabled() -> bool:
    """True when ``PRNSEG_DEBUG`` is set to anything but empty, 0, false, no or off."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def print_debug_traceback(exc: BaseException, file=None) -> None:
    """The traceback of ``exc`` and of every exception behind it, also those a ``raise ... from None``
    hid to keep the message one line."""
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__suppress_context__ = False
        e = e.__cause__ or e.__context__
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file if file is not None else sys.stderr)
