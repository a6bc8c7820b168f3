"""Claims about learning rates, checked on a study's measurements.

Each claim (a sentence from the common explanations of the LR: "too high an LR trains unstably")
is a registry entry (`registry.CLAIMS`) with its rule as text and a check: a plain function of the
report's tidy frames (`evidence.Frames`) that returns evidence numbers with n and spread and a
verdict — supported, not supported or inconclusive — decided by `decide.py`'s rules. One module per
family of claims; no torch, no MLflow.
"""

from lrstudy.report.claims.evidence import (
    VERDICT_TEXT,
    VERDICTS,
    ClaimResult,
    Evidence,
    Frames,
)
from lrstudy.report.claims.registry import CLAIMS, claim_names, run_claims

__all__ = [
    "CLAIMS",
    "VERDICTS",
    "VERDICT_TEXT",
    "ClaimResult",
    "Evidence",
    "Frames",
    "claim_names",
    "run_claims",
]
