"""Whole-process timing shared by the benches: run commands in turn, n times, report the spread."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall seconds of one run of `cmd` (which must succeed)."""
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def spread(values: list[float]) -> str:
    """'median (min–max, n=N)'."""
    return (
        f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, "
        f"n={len(values)})"
    )


def ratio_spread(a: list[float], b: list[float]) -> str:
    """Pairwise a/b ratios (runs interleaved, so machine drift cancels) as median (min–max)."""
    r = [x / y for x, y in zip(a, b, strict=True)]
    return f"{statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})"
