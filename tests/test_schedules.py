"""Schedules: exact values at step 0, at the warmup join and at the last step; torch parity."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest

from lrstudy.schedules.catalog import (
    SCHEDULES,
    Plateau,
    build_schedule,
    join_warmup,
    monitor_of,
    schedule_arg_names,
    schedule_defaults,
    warmup_steps_from,
)

SPE = 10  # steps per epoch in every test below
TOTAL = 100
WARMUP = 10


def _triangle(cycles: float) -> float:
    """0 at the start of each cycle, 1 halfway: the CLR wave, written independently of the code."""
    return 1.0 - abs(2.0 * (cycles % 1.0) - 1.0)


# name -> (args, value at step 0, value at the last step n-1), for a main schedule of n steps.
# Exact floats where the docs promise them; approx only where the value is an interior point.
CASES = {
    "constant": ({}, lambda n: 1.0, lambda n: 1.0),
    "step": ({}, lambda n: 1.0, lambda n: 0.1 ** ((n - 1) // 30)),
    "multistep": ({}, lambda n: 1.0, lambda n: 0.1**2),
    "exponential": ({}, lambda n: 1.0, lambda n: 0.9 ** ((n - 1) / SPE)),
    "inverse_time": ({"decay": 0.5}, lambda n: 1.0, lambda n: 1.0 / (1.0 + 0.5 * (n - 1) / SPE)),
    "linear": ({"end": 0.1}, lambda n: 1.0, lambda n: 0.1),
    "polynomial": ({"power": 3.0, "end": 0.07}, lambda n: 1.0, lambda n: 0.07),
    "cosine": ({"min": 0.05}, lambda n: 1.0, lambda n: 0.05),
    "cosine_restarts": ({"min": 0.05, "mult": 2.0}, lambda n: 1.0, lambda n: 0.05),
    "cyclic": (
        {},
        lambda n: 0.1,
        lambda n: pytest.approx(0.1 + 0.9 * _triangle((n - 1) / (2 * SPE)), rel=1e-12),
    ),
    "one_cycle": ({}, lambda n: 1.0 / 25.0, lambda n: 1.0 / 25.0 / 1e4),
    "plateau": ({}, lambda n: 1.0, lambda n: 1.0),
}


def test_every_schedule_has_a_boundary_case() -> None:
    assert set(CASES) == set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_boundaries_without_warmup(name: str) -> None:
    args, first, last = CASES[name]
    schedule = build_schedule(name, args, total_steps=TOTAL, steps_per_epoch=SPE)
    assert schedule(0) == first(TOTAL)
    assert schedule(TOTAL - 1) == last(TOTAL)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_boundaries_with_warmup(name: str) -> None:
    args, first, last = CASES[name]
    kw = {"total_steps": TOTAL, "steps_per_epoch": SPE, "warmup_steps": WARMUP}
    schedule = build_schedule(name, args, **kw)
    assert schedule(0) == 1.0 / WARMUP
    assert schedule(WARMUP // 2 - 1) == 0.5
    assert schedule(WARMUP - 1) == 1.0
    # From W on, the main schedule runs over the remaining steps as if it started at 0.
    assert schedule(WARMUP) == first(TOTAL - WARMUP)
    assert schedule(TOTAL - 1) == last(TOTAL - WARMUP)


# Exact values at the steps where a schedule changes course: (name, args, step, value).
EVENTS = [
    ("step", {"every": 2.5, "gamma": 0.5}, 24, 1.0),
    ("step", {"every": 2.5, "gamma": 0.5}, 25, 0.5),
    ("multistep", {"milestones": [3, 1.5]}, 14, 1.0),
    ("multistep", {"milestones": [3, 1.5]}, 15, 0.1),
    ("multistep", {"milestones": [3, 1.5]}, 30, 0.1**2),
    ("multistep", {}, 49, 1.0),  # default milestones at 1/2 and 3/4 of the steps
    ("multistep", {}, 50, 0.1),
    ("multistep", {}, 75, 0.1**2),
    ("exponential", {"gamma": 0.5}, 2 * SPE, 0.25),
    ("inverse_time", {"decay": 1.0}, 3 * SPE, 0.25),
    ("cosine", {}, (TOTAL - 1) // 2, pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 99)))),
    ("cosine_restarts", {"period": 3, "min": 0.2}, 29, 0.2),  # last step of cycle 1
    ("cosine_restarts", {"period": 3, "min": 0.2}, 30, 1.0),  # restart
    ("cosine_restarts", {"period": 2, "mult": 2}, 59, 0.0),  # cycles 20 + 40 steps
    ("cosine_restarts", {"period": 2, "mult": 2}, 60, 1.0),
    ("cosine_restarts", {}, 32, 0.0),  # default: three cycles, the first 33 steps
    ("cosine_restarts", {}, 33, 1.0),
    ("cyclic", {"period": 4}, 20, 1.0),  # peak halfway through the cycle
    ("cyclic", {"period": 4}, 40, 0.1),  # back to base
    ("cyclic", {"period": 4, "mode": "triangular2"}, 60, 0.1 + 0.9 * 0.5),
    ("cyclic", {"period": 4, "mode": "exp_range", "gamma": 0.5}, 20, 0.1 + 0.9 * 0.5**20),
    ("one_cycle", {}, 29, 1.0),  # pct_start * total - 1: the peak
    ("one_cycle", {"pct_start": 0.5, "anneal": "linear"}, 49, 1.0),
]


@pytest.mark.parametrize(("name", "args", "step", "value"), EVENTS)
def test_event_values(name: str, args: dict, step: int, value: float) -> None:
    schedule = build_schedule(name, args, total_steps=TOTAL, steps_per_epoch=SPE)
    assert schedule(step) == value


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("warmup", [0, WARMUP])
def test_values_stay_in_unit_range_and_past_the_end(name: str, warmup: int) -> None:
    # The adapter asks for step `total` after the last optimizer step: it must not fail.
    kw = {"total_steps": TOTAL, "steps_per_epoch": SPE, "warmup_steps": warmup}
    schedule = build_schedule(name, CASES[name][0], **kw)
    assert all(0.0 <= schedule(s) <= 1.0 for s in range(TOTAL + 50))


def test_cosine_restarts_with_one_cycle_is_cosine() -> None:
    one = build_schedule("cosine_restarts", {"period": 10}, total_steps=TOTAL, steps_per_epoch=SPE)
    plain = build_schedule("cosine", {}, total_steps=TOTAL, steps_per_epoch=SPE)
    assert [one(s) for s in range(TOTAL)] == [plain(s) for s in range(TOTAL)]


def test_single_step_run_stays_at_peak() -> None:
    for name in ("linear", "cosine", "polynomial"):
        assert build_schedule(name, {}, total_steps=1, steps_per_epoch=1)(0) == 1.0


def test_factories_follow_the_signature_contract() -> None:
    for name, factory in SCHEDULES.items():
        params = inspect.signature(factory).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
        user = [p for p in params if p.name not in ("total_steps", "steps_per_epoch")]
        assert all(p.default is not inspect.Parameter.empty for p in user), name
        assert schedule_arg_names(name) == [p.name for p in user]
    assert schedule_defaults("one_cycle") == {
        "pct_start": 0.3,
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "anneal": "cos",
    }
    assert schedule_arg_names("constant") == []


BAD = [
    ("step", {"gamma": 0}, "gamma"),
    ("step", {"gamma": -0.5}, "gamma"),
    ("step", {"every": 0}, "every"),
    ("multistep", {"milestones": [1, -2]}, "milestones"),
    ("multistep", {"milestones": 3}, "milestones"),
    ("multistep", {"milestones": "5"}, "milestones"),
    ("exponential", {"gamma": 1.5}, "gamma"),
    ("exponential", {"gamma": "fast"}, "gamma"),
    ("inverse_time", {"decay": -1}, "decay"),
    ("linear", {"end": 2}, "end"),
    ("polynomial", {"power": 0}, "power"),
    ("cosine", {"min": -0.1}, "min"),
    ("cosine_restarts", {"mult": 0.5}, "mult"),
    ("cosine_restarts", {"period": 0}, "period"),
    ("cyclic", {"mode": "sine"}, "mode"),
    ("cyclic", {"base": 1.0}, "base"),
    ("cyclic", {"period": -2}, "period"),
    ("one_cycle", {"pct_start": 0}, "pct_start"),
    ("one_cycle", {"pct_start": 1.0}, "pct_start"),
    ("one_cycle", {"div_factor": 0.5}, "div_factor"),
    ("one_cycle", {"anneal": "cubic"}, "anneal"),
    ("plateau", {"factor": 1.0}, "factor"),
    ("plateau", {"patience": -1}, "patience"),
    ("plateau", {"patience": 1.5}, "patience"),
    ("plateau", {"threshold": -1}, "threshold"),
    ("plateau", {"mode": "avg"}, "mode"),
    ("plateau", {"monitor": ""}, "monitor"),
]


@pytest.mark.parametrize(("name", "args", "arg"), BAD)
def test_bad_values_name_the_argument_and_value(name: str, args: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=rf"^{arg}=") as err:
        build_schedule(name, args, total_steps=TOTAL, steps_per_epoch=SPE)
    assert repr(args[arg]) in str(err.value) and "allowed" in str(err.value)


def test_unknown_schedule_and_argument_list_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'cosin'; allowed: constant, step"):
        build_schedule("cosin", {}, total_steps=TOTAL, steps_per_epoch=SPE)
    with pytest.raises(ValueError, match="does not take gama; allowed: every, gamma"):
        build_schedule("step", {"gama": 0.5}, total_steps=TOTAL, steps_per_epoch=SPE)


def test_numbers_written_as_yaml_strings_are_accepted() -> None:
    # PyYAML (YAML 1.1) reads 1e4 as the string "1e4".
    a = build_schedule("one_cycle", {"final_div_factor": "1e4"}, total_steps=50, steps_per_epoch=5)
    b = build_schedule("one_cycle", {}, total_steps=50, steps_per_epoch=5)
    assert [a(s) for s in range(50)] == [b(s) for s in range(50)]


@pytest.mark.parametrize(
    ("warmup", "steps"), [(None, 0), (0, 0), (0.0, 0), (0.1, 10), (0.25, 25), (7, 7), (99, 99)]
)
def test_warmup_steps_from(warmup: float | int | None, steps: int) -> None:
    assert warmup_steps_from(warmup, TOTAL) == steps


@pytest.mark.parametrize("warmup", [1.0, 1.5, -1, -0.1, 100, True, "10"])
def test_warmup_steps_from_rejects(warmup: object) -> None:
    with pytest.raises(ValueError, match="warmup="):
        warmup_steps_from(warmup, TOTAL)  # type: ignore[arg-type]


def test_build_schedule_rejects_warmup_that_leaves_no_steps() -> None:
    with pytest.raises(ValueError, match="warmup_steps=100"):
        build_schedule("cosine", {}, total_steps=TOTAL, steps_per_epoch=SPE, warmup_steps=100)


def test_zero_warmup_is_the_schedule_itself() -> None:
    main = build_schedule("cosine", {}, total_steps=TOTAL, steps_per_epoch=SPE)
    assert join_warmup(main, 0) is main


def test_schedules_module_does_not_import_torch() -> None:
    code = "import lrstudy.schedules.catalog, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- Plateau: the one stateful schedule ---


def _run_plateau(schedule: Plateau, values: list[float], spe: int) -> list[float]:
    """Drive like torch would: query each step, observe at each epoch end (step = next step)."""
    out = []
    for epoch, value in enumerate(values):
        out += [schedule(epoch * spe + i) for i in range(spe)]
        schedule.observe(value, step=(epoch + 1) * spe)
    return out


def test_plateau_reduces_after_patience_and_keeps_history() -> None:
    p = Plateau(factor=0.5, patience=1)
    assert monitor_of(p) == "val/loss"
    _run_plateau(p, [1.0, 0.5, 0.6, 0.6, 0.7, 0.7], spe=2)
    # best 0.5 at epoch 1; bad epochs 2, 3 -> cut at the end of epoch 3 (step 8); 4, 5 -> step 12.
    assert [p(s) for s in (7, 8, 11, 12, 20)] == [1.0, 0.5, 0.5, 0.25, 0.25]


def test_plateau_min_floor_and_max_mode() -> None:
    p = Plateau(factor=0.1, patience=0, min=0.05, mode="max", monitor="val/acc")
    _run_plateau(p, [0.5, 0.4, 0.4, 0.4], spe=1)
    assert monitor_of(p) == "val/acc"
    assert [p(s) for s in range(5)] == [1.0, 1.0, 0.1, 0.05, 0.05]


def test_plateau_observe_without_step_applies_after_last_queried_step() -> None:
    # The LR of the step last asked for is already in the optimizer: a cut can only follow it.
    p = Plateau(patience=0)
    p(0), p(3)
    p.observe(1.0)
    p.observe(2.0)
    assert (p(3), p(4)) == (1.0, 0.1)
    w = build_schedule(
        "plateau", {"patience": 0}, total_steps=20, steps_per_epoch=2, warmup_steps=4
    )
    w(3)
    w.observe(1.0)  # type: ignore[attr-defined]  # at step 4 = W: counts, sets best
    w(5)
    w.observe(2.0)  # type: ignore[attr-defined]  # cut from step 6
    assert (w(5), w(6)) == (1.0, 0.1)


def test_plateau_matches_torch_reduce_on_plateau() -> None:
    torch = pytest.importorskip("torch")
    values = [1.0, 0.9, 0.9, 0.8999, 0.95, 0.91, 0.5, 0.5, 0.5, 0.5, float("nan"), 0.4, 0.4, 0.4]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=2, min_lr=0.02)
    ours = Plateau(factor=0.3, patience=2, min=0.01)
    for epoch, value in enumerate(values):
        ref.step(value)
        ours.observe(value, step=epoch + 1)
        assert 2.0 * ours(epoch + 1) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_plateau_with_warmup_ignores_warmup_and_shifts_steps() -> None:
    # 3 steps per epoch, 6 warmup steps: epochs 0 and 1 are warmup.
    schedule = build_schedule(
        "plateau", {"patience": 0, "factor": 0.5}, total_steps=30, steps_per_epoch=3, warmup_steps=6
    )
    assert monitor_of(schedule) == "val/loss"
    values = [5.0, 9.0, 1.0, 2.0, 0.5, 3.0]
    seen = _run_plateau(schedule, values, spe=3)  # type: ignore[arg-type]
    # Warmup is untouched by the rising losses observed during it (at steps 3 and 6 would be
    # ignored anyway: step 3 < W). The observation at step 6 (= W) is the first to count and only
    # sets best=9.0; 1.0 improves; 2.0 at step 12 cuts; 0.5 improves; 3.0 at step 18 cuts again.
    assert seen[:6] == [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0]
    assert seen[6:12] == [1.0] * 6
    assert seen[12:] == [0.5] * 6
    assert schedule(18) == 0.25 and schedule(29) == 0.25
    assert schedule.main(0) == 1.0 and schedule.main(6) == 0.5  # main runs in post-warmup steps


def test_plateau_observations_during_warmup_change_nothing() -> None:
    schedule = build_schedule(
        "plateau", {"patience": 0}, total_steps=40, steps_per_epoch=2, warmup_steps=10
    )
    _run_plateau(schedule, [1.0, 2.0, 3.0, 4.0], spe=2)  # all before step 10
    assert [schedule(s) for s in range(10, 40)] == [1.0] * 30
    assert schedule.main.state_dict()["_best"] == math.inf  # type: ignore[attr-defined]


def test_plateau_state_round_trip() -> None:
    a = build_schedule(
        "plateau", {"patience": 0}, total_steps=40, steps_per_epoch=2, warmup_steps=4
    )
    _run_plateau(a, [3.0, 2.0, 1.0, 2.0, 2.0], spe=2)  # type: ignore[arg-type]
    b = build_schedule(
        "plateau", {"patience": 0}, total_steps=40, steps_per_epoch=2, warmup_steps=4
    )
    b.load_state_dict(a.state_dict())  # type: ignore[attr-defined]
    assert [a(s) for s in range(40)] == [b(s) for s in range(40)]
    a.observe(5.0, step=12)  # type: ignore[attr-defined]
    b.observe(5.0, step=12)  # type: ignore[attr-defined]
    assert [a(s) for s in range(40)] == [b(s) for s in range(40)]


# --- parity with torch.optim.lr_scheduler over every step ---


def _torch_multipliers(make, total: int, peak: float = 2.0) -> list[float]:
    """LR torch applies at each optimizer step, divided by the peak LR."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    sched = make(opt)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"] / peak)
        opt.step()
        sched.step()
    return out


def _ours(name: str, args: dict, total: int, spe: int = SPE) -> list[float]:
    schedule = build_schedule(name, args, total_steps=total, steps_per_epoch=spe)
    return [schedule(s) for s in range(total)]


@pytest.mark.parametrize(
    ("total", "pct", "anneal"), [(100, 0.3, "cos"), (97, 0.25, "linear"), (13, 0.5, "cos")]
)
def test_one_cycle_matches_torch(total: int, pct: float, anneal: str) -> None:
    torch = pytest.importorskip("torch")
    args = {"pct_start": pct, "div_factor": 10.0, "final_div_factor": 100.0, "anneal": anneal}
    ref = _torch_multipliers(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=2.0,
            total_steps=total,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        ),
        total,
    )
    assert _ours("one_cycle", args, total) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_matches_torch(mode: str) -> None:
    torch = pytest.importorskip("torch")
    ref = _torch_multipliers(
        lambda opt: torch.optim.lr_scheduler.CyclicLR(
            opt,
            base_lr=0.2,
            max_lr=2.0,
            step_size_up=15,
            mode=mode,
            gamma=0.97,
            cycle_momentum=False,
        ),
        TOTAL,
    )
    ours = _ours("cyclic", {"mode": mode, "base": 0.1, "period": 3, "gamma": 0.97}, TOTAL)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_cosine_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    ref = _torch_multipliers(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL - 1, eta_min=0.2),
        TOTAL,
    )
    assert _ours("cosine", {"min": 0.1}, TOTAL) == pytest.approx(ref, rel=1e-9)


def test_step_and_multistep_match_torch() -> None:
    torch = pytest.importorskip("torch")
    lrs = torch.optim.lr_scheduler
    ref = _torch_multipliers(lambda opt: lrs.StepLR(opt, step_size=20, gamma=0.5), TOTAL)
    assert _ours("step", {"every": 2, "gamma": 0.5}, TOTAL) == pytest.approx(ref, rel=1e-12)
    ref = _torch_multipliers(lambda opt: lrs.MultiStepLR(opt, [15, 40], gamma=0.3), TOTAL)
    ours = _ours("multistep", {"milestones": [1.5, 4], "gamma": 0.3}, TOTAL)
    assert ours == pytest.approx(ref, rel=1e-12)
