"""Which trials can train together as one population, how many at once, and why others cannot.

Members of a population share everything that fixes the shape of a step: data set, model
architecture, batch size, epochs (so the step count), training-set size and the optimizer
algorithm. They may differ in LR, schedule, warmup, optimizer hyperparameters, layer-wise LR
multipliers, seed, divergence factor, target and noise levels. A trial that cannot join one goes
to the trial engine with a one-line reason; grouping never fails a study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from lrstudy.plan import Trial
from lrstudy.spec.optimizers import OPTIMIZERS
from lrstudy.train.data import Dataset
from lrstudy.train.module import prepare

# Rough bytes per member per parameter value, in units of the dtype: the parameter, its gradient,
# up to three optimizer states (AMSGrad) and the temporaries of one update and one backward.
VALUES_PER_PARAMETER = 10
CPU_MEMORY_BYTES = 2 << 30  # a population should leave most of a shared machine's RAM alone
# On a few CPU cores a population stops getting faster long before memory runs out (design.md:
# 1.2-1.7x on 2 cores); more members then only delay every member's results.
CPU_MAX_MEMBERS = 64
GPU_MAX_MEMBERS = 1024  # design.md: 276 k trial-steps/s at K = 1024 on an H100 (MNIST-1D MLP)


@dataclass(frozen=True)
class PopulationKey:
    """What every member of one population shares."""

    dataset: str
    data_args: str
    model: str
    model_args: str
    batch_size: int
    epochs: int
    train_fraction: float
    optimizer: str
    accelerator: str


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=list)


def population_key(trial: Trial) -> PopulationKey:
    """The key trials must share to train in one population (the optimizer name included:
    members with different optimizers go to different populations)."""
    return PopulationKey(
        dataset=trial.dataset,
        data_args=_canonical(trial.data_args),
        model=trial.model,
        model_args=_canonical(trial.model_args),
        batch_size=trial.batch_size,
        epochs=trial.epochs,
        train_fraction=float(trial.train_fraction),
        optimizer=trial.optimizer,
        accelerator=trial.accelerator,
    )


def lr_free_reason(optimizer: str) -> str | None:
    """Why an LR-free optimizer trains on the trial engine; None for torch.optim's.

    Not vectorised on purpose: Prodigy's and D-Adaptation's d is one scalar per member, but the
    packages' updates (and schedule-free's two weight sequences) would have to be rewritten as
    functional population optimizers and shown equal to the packages run by run; the trial
    engine runs the packages themselves.
    """
    kind = OPTIMIZERS[optimizer].lr_free if optimizer in OPTIMIZERS else None
    if kind == "schedule_free":
        return (
            f"{optimizer} keeps a second (averaged) weight sequence, which the population "
            "engine does not implement; the trial engine runs the schedulefree package itself"
        )
    if kind == "adaptive":
        return (
            f"{optimizer} adapts its step size inside its package, which the population engine "
            "does not implement; the trial engine runs the package itself"
        )
    return None


def check_population(trials: list[Trial]) -> None:
    """Raise ValueError unless these trials may train as one population."""
    if not trials:
        raise ValueError("a population needs at least one trial")
    key = population_key(trials[0])
    for t in trials[1:]:
        other = population_key(t)
        if other != key:
            fields = [f for f in key.__dataclass_fields__ if getattr(key, f) != getattr(other, f)]
            raise ValueError(
                f"trials {trials[0].name!r} and {t.name!r} differ in {', '.join(fields)}: "
                "they cannot share a population"
            )
    why = lr_free_reason(trials[0].optimizer)
    if why:
        raise ValueError(why)
    missing = [t.name for t in trials if t.lr is None]
    if missing:
        raise ValueError(f"trials without a learning rate (resolve lr: auto first): {missing}")


def default_population_size(
    param_count: int,
    *,
    bytes_per_value: int = 4,
    accelerator: str = "cpu",
    memory_bytes: int | None = None,
    activation_values: int = 0,
) -> int:
    """How many members of a model with `param_count` parameters to train at once.

    Args:
        bytes_per_value: 4 for float32, 8 for float64.
        accelerator: "cpu" or "cuda"/"gpu"; sets the default memory budget and the cap.
        memory_bytes: memory the population may use; default 2 GiB on CPU, half of the GPU's free
            memory on a GPU.
        activation_values: per member, values kept for the backward pass (batch x activations);
            0 when unknown (small models are dominated by their parameters and optimizer state).
    """
    gpu = accelerator in ("cuda", "gpu")
    if memory_bytes is None:
        if gpu and torch.cuda.is_available():
            memory_bytes = torch.cuda.mem_get_info()[0] // 2
        else:
            memory_bytes = CPU_MEMORY_BYTES
    per_member = bytes_per_value * (VALUES_PER_PARAMETER * param_count + 3 * activation_values)
    cap = GPU_MAX_MEMBERS if gpu else CPU_MAX_MEMBERS
    return max(1, min(cap, memory_bytes // max(per_member, 1)))


def _balanced(items: list[Trial], max_size: int) -> list[list[Trial]]:
    """Split into the fewest chunks of at most max_size, as even as possible (50 -> 25 + 25)."""
    n_chunks = -(-len(items) // max_size)
    base, extra = divmod(len(items), n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        size = base + (i < extra)
        out.append(items[start : start + size])
        start += size
    return out


def form_populations(
    trials: list[Trial], data: Dataset, max_size: int | None = None, cap: int | None = None
) -> tuple[list[list[Trial]], list[tuple[Trial, str]]]:
    """Group trials into populations; the rest go solo, each with its reason.

    Args:
        trials: the trials to run (order is kept within each population).
        data: the study's dataset (its shapes build the model once per group).
        max_size: members per population; default `default_population_size` of the model.
        cap: at most this many members whatever the size (TPE: its start-up draws at once).

    Returns:
        (populations, solo): lists of trials to run with `run_population`, and
        (trial, reason) pairs for the trial engine.
    """
    from lrstudy.train.population.members import Member
    from lrstudy.train.population.stacked import seeded_model, vectorise_problem

    groups: dict[PopulationKey, list[Trial]] = {}
    solo: list[tuple[Trial, str]] = []
    for t in trials:
        if t.lr is None:
            solo.append((t, "its learning rate is chosen by a range test (lr: auto) first"))
        elif t.task_kind == "module":
            solo.append((t, "a LightningModule trains on the trial engine (lrstudy does not "
                            "vectorise a user's training_step)"))  # fmt: skip
        elif lr_free_reason(t.optimizer):
            solo.append((t, lr_free_reason(t.optimizer)))
        elif t.loss != "cross_entropy":
            label = t.loss if isinstance(t.loss, str) else t.loss["class_path"]
            solo.append((t, f"loss {label}: populations train cross-entropy classifiers"))
        else:
            groups.setdefault(population_key(t), []).append(t)
    populations: list[list[Trial]] = []
    for members in groups.values():
        first = members[0]
        model = seeded_model(first.model, data.input_shape, data.num_classes, first.model_args, 0)
        problem = vectorise_problem(model, data.input_shape)
        if problem:
            solo += [(t, f"model {first.model!r} does not vectorise: {problem}") for t in members]
            continue
        _, spe = prepare(first, data)
        fit = []
        for t in members:
            try:  # the solo run's own checks (optimizer settings, layer_lr, schedule, warmup)
                Member(0, t, model, spe, spe * t.epochs)
            except (ValueError, TypeError) as e:
                solo.append((t, f"the trial engine reports its settings' error: {e}"))
            else:
                fit.append(t)
        if not fit:
            continue
        size = max_size or default_population_size(
            sum(p.numel() for p in model.parameters()), accelerator=first.accelerator
        )
        size = min(size, cap or size)
        if len(fit) == 1 or size <= 1:
            why = (
                "no other trial shares its data, model, batch size, epochs and optimizer"
                if len(fit) == 1
                else "the population size limit is 1"
            )
            solo += [(t, why) for t in fit]
            continue
        for chunk in _balanced(fit, size):
            if len(chunk) > 1:
                populations.append(chunk)
            else:  # a population of one gains nothing over the trial engine
                solo.append((chunk[0], f"left alone by the population size limit ({size})"))
    return populations, solo
