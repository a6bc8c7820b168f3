"""What `plan` says a successive-halving search will cost, before anything runs (torch-free).

Counted in trial-epochs (one trial trained one epoch): the full grid's, and a synchronous pass
of successive halving's (every configuration judged at once at each rung, the top 1/eta going
on), which the asynchronous rule matches when trials reach a rung together (a population) and
exceeds by a little when early arrivals go on before the rung fills. `lr: auto` adds one range
test per seed (its steps, not epochs).
"""

from __future__ import annotations

from lrstudy.plan import Trial
from lrstudy.rangetest.ramp import RAMP
from lrstudy.spec import StudySpec
from lrstudy.spec.search import AUTO_FACTORS


def halving_epochs(configs: int, rungs: list[int], epochs: int, eta: float) -> int:
    """Configuration-epochs of a synchronous successive-halving pass."""
    total, alive, start = 0, configs, 0
    for rung in [*rungs, epochs]:
        total += alive * (rung - start)
        alive, start = max(1, int(alive // eta)), rung
    return total


def search_cost_lines(spec: StudySpec, trials: list[Trial]) -> list[str]:
    """`plan`'s lines on the search's cost; [] for a study without successive halving."""
    halving = spec.search.successive_halving
    if halving is None or not trials or not trials[0].halving:
        return []
    seeds = len(spec.seeds)
    configs = len({t.config_key for t in trials})
    rungs, epochs = list(trials[0].halving["rungs"]), spec.train.epochs
    full = len(trials) * epochs
    expected = halving_epochs(configs, rungs, epochs, halving.eta) * seeds
    lines = [
        f"successive halving (eta {halving.eta:g}): configurations judged after epochs "
        f"{', '.join(map(str, rungs))} of {epochs}; about {expected} trial-epochs of the full "
        f"grid's {full} ({full / expected:.1f}x less) if every rung fills before it is judged, "
        "a little more when early arrivals go on"
    ]
    autos = sum(1 for t in trials if t.lr_factor is not None and t.lr_factor == AUTO_FACTORS[0])
    if autos:
        lines.append(
            f"lr: auto: a range test of {RAMP.steps} steps per seed and optimizer ({autos} in all, "
            "reused once logged), then successive halving picks among "
            f"{len(AUTO_FACTORS)} candidates from x{AUTO_FACTORS[0]:g} to x{AUTO_FACTORS[-1]:.3g} "
            "of its recommendation"
        )
    return lines
