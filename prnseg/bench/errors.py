"""How ``prnseg bench`` fails: one error type for what the user must fix, one sentence per failed row."""

from __future__ import annotations

from prnseg.errors import PrnsegError


class BenchError(PrnsegError):
    """Bad ``prnseg bench`` arguments or an output folder it cannot use."""


def failure_reason(exc: BaseException) -> str:
    """The first line of ``exc`` for a row's ``reason``: our own errors are sentences already, any
    other keeps its type name so that the cause stays recognisable."""
    msg = (str(exc).strip().splitlines() or [""])[0][:300]
    return msg if isinstance(exc, PrnsegError) else f"{type(exc).__name__}: {msg}"
