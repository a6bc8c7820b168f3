"""Stable short hashes of JSON-able settings: trial and config keys, range-test keys, spec hashes.

Finished runs are found again by these keys (resume, `lr: auto` reuse), including runs written by
an older lrstudy, so the encoding below must never change: tests/test_keys.py pins literal values.
No torch here; the spec stage uses it too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any, length: int = 16) -> str:
    """The first `length` hex digits of SHA-256 over `obj` as canonical JSON.

    Canonical: keys sorted and tuples written as lists; another iterable JSON does not know is
    written as a list of its items (give it in a stable order).
    """
    blob = json.dumps(obj, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
