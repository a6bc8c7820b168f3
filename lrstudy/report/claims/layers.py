"""Layer-wise LRs, in both directions, against one LR for all layers.

A trial's `layer_lr` param says its variant: "none" (uniform), {"decay": d} (each earlier layer
gets d × the next one's LR: d < 1 lower layers slower, as fastai's discriminative LRs; d > 1 lower
layers faster) or a list of multipliers from input to output (rising: lower slower; falling:
lower faster). Each variant is compared at its own best LR (the LR is the last layer's), as the
report picks a best: the highest seed-mean final accuracy among LRs without a diverged seed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lrstudy.report.analyze import fmt_value
from lrstudy.report.best import pick_best
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.evidence import Claim, Evidence, Finding, Frames, inconclusive
from lrstudy.report.claims.measures import scored_acc

UNIFORM, LOWER_SLOWER, LOWER_FASTER = "uniform", "lower layers slower", "lower layers faster"


def variant(layer_lr: object) -> str:
    """The direction of a `layer_lr` param value (as logged: JSON text or "none")."""
    try:
        v = json.loads(layer_lr) if isinstance(layer_lr, str) and layer_lr != "none" else None
    except ValueError:
        v = None
    if isinstance(v, dict) and "decay" in v:
        d = float(v["decay"])
        return UNIFORM if d == 1 else (LOWER_SLOWER if d < 1 else LOWER_FASTER)
    if isinstance(v, list) and len(v) > 1 and v[0] != v[-1]:
        return LOWER_SLOWER if v[0] < v[-1] else LOWER_FASTER
    return UNIFORM


def best_accs(trials: pd.DataFrame) -> tuple[float, np.ndarray] | None:
    """(best LR, its seeds' accuracies) of one variant; None when every LR has a diverged seed."""
    t = trials.assign(_acc=scored_acc(trials))
    g = t.groupby("lr", sort=True)
    alive = ~g["diverged"].any()
    lr = pick_best(g["_acc"].mean()[alive])
    if lr is None:
        return None
    return float(lr), t.loc[t["lr"] == lr, "_acc"].to_numpy(dtype=float)


def _compare(frames: Frames, direction: str) -> Finding:
    t = frames.trials
    if "params.layer_lr" not in t.columns:
        return inconclusive("no layer_lr param on the trials (a study with optimizers[].layer_lr)")
    kinds = t["params.layer_lr"].map(variant)
    base, other = best_accs(t[kinds == UNIFORM]), best_accs(t[kinds == direction])
    if base is None or other is None:
        what = UNIFORM if base is None else direction
        return inconclusive(f"needs trials with {what} LRs and an LR without a diverged seed")
    est, se, na, nb = D.difference(other[1], base[1])
    ev = (
        D.values_evidence(f"final val acc, {direction} (best lr={fmt_value(other[0])})", other[1]),
        D.values_evidence(f"final val acc, {UNIFORM} (best lr={fmt_value(base[0])})", base[1]),
        Evidence(f"difference ({direction} − {UNIFORM})", est, se, f"{na} vs {nb}", kind="se"),
    )
    verdict = D.greater(est, se, D.ACC_MARGIN)
    return Finding(verdict, f"{direction} − {UNIFORM} = {est:+.3f} ± {se:.3f} se", ev)


def lower_faster(frames: Frames) -> Finding:
    return _compare(frames, LOWER_FASTER)


def lower_slower(frames: Frames) -> Finding:
    return _compare(frames, LOWER_SLOWER)


_RULE = ("Each variant at its own best LR (highest seed-mean final val accuracy among LRs without "
         "a diverged seed; a diverged seed counts as chance), variant − one LR for all layers: ")  # fmt: skip
CLAIMS = [
    Claim("lower_layers_faster_helps", "layer-wise LRs",
          "Giving the lower layers a larger LR than the upper ones trains a better model.",
          _RULE + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}"), "lr-sensitivity",
          lower_faster),
    Claim("lower_layers_slower_helps", "layer-wise LRs",
          "Giving the lower layers a smaller LR (discriminative LRs, as in fastai) trains a "
          "better model.", _RULE + D.greater_rule("the difference", f"{D.ACC_MARGIN:g}"),
          "lr-sensitivity", lower_slower),
]  # fmt: skip
