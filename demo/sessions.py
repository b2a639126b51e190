"""What the server keeps per visitor between a model call and the slider re-renders, with its caps
(count, bytes, age). No Gradio here."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

SESSION_MAX_ITEMS = 32
SESSION_MAX_BYTES = 1 << 30
SESSION_MAX_AGE_S = 3600


class SessionStore:
    """Per-visitor results kept between a model call and the slider re-renders, bounded in count,
    bytes and age: the oldest entries go first, and an evicted or expired one reads as None."""

    def __init__(self, max_items: int, max_bytes: int, max_age_s: float, clock=time.monotonic):
        self.max_items, self.max_bytes, self.max_age_s, self.clock = max_items, max_bytes, max_age_s, clock
        self._items: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: Any, nbytes: int = 0) -> None:
        with self._lock:
            self._drop(key)
            self._items[key] = (self.clock(), int(nbytes), value)
            self.nbytes += int(nbytes)
            self._evict()

    def get(self, key: str | None) -> Any:
        with self._lock:
            self._evict()
            item = self._items.get(key) if key else None
            return None if item is None else item[2]

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.nbytes -= item[1]

    def _evict(self) -> None:
        now = self.clock()
        while self._items:
            key, (born, nbytes, _) = next(iter(self._items.items()))
            if (len(self._items) > self.max_items or self.nbytes > self.max_bytes
                    or now - born > self.max_age_s):
                self._drop(key)
            else:
                break


def state_bytes(state: dict) -> int:
    """Bytes held by a cached result's arrays (the prediction's planes and the display copies)."""
    arrays = [v for v in state.values() if isinstance(v, np.ndarray)]
    pred = state.get("pred")
    arrays += [v for v in vars(pred).values() if isinstance(v, np.ndarray)] if pred is not None else []
    return sum(a.nbytes for a in arrays)
