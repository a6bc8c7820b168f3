"""Training one population: a Lightning Trainer around `PopulationModule`.

`run_population` is the engine's entry point (`execute/population.py` calls it with the claimed
members); `fit_population` returns the trained module itself (results, and weights if kept),
which the exactness tests compare with solo runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch

from lrstudy.plan import Trial
from lrstudy.train.data import Dataset
from lrstudy.train.population.grouping import check_population
from lrstudy.train.population.members import MemberResult
from lrstudy.train.population.module import Emit, Judge, OnDone, PopulationModule, Refill


class _Steps:
    """The train loader Lightning iterates: step numbers; the module gathers the batches itself."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.steps))


def fit_population(
    trials: list[Trial],
    data: Dataset,
    *,
    emit: Emit,
    accelerator: str | None = None,
    dtype: torch.dtype = torch.float32,
    sync_every: int | None = None,
    threads: int | None = None,
    keep_weights: bool = False,
    judge: Judge | None = None,
    refill: Refill | None = None,
    on_done: OnDone | None = None,
) -> PopulationModule:
    """`run_population`, returning the trained module (results, and weights if kept)."""
    check_population(trials)
    torch.set_num_threads(threads or max(t.threads for t in trials))
    accelerator = accelerator or trials[0].accelerator
    accelerator = {"cuda": "gpu"}.get(accelerator, accelerator)
    module = PopulationModule(
        trials,
        data,
        emit,
        dtype=dtype,
        sync_every=sync_every,
        keep_weights=keep_weights,
        judge=judge,
        refill=refill,
        on_done=on_done,
    )
    trainer = L.Trainer(
        # With newcomers the population trains until no member is left (it stops itself).
        max_epochs=trials[0].epochs if refill is None else -1,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=accelerator == "cpu" or None,
    )
    trainer.fit(module, train_dataloaders=_Steps(module.spe))
    return module


def run_population(
    trials: list[Trial],
    data: Dataset,
    *,
    emit: Emit,
    accelerator: str | None = None,
    dtype: torch.dtype = torch.float32,
    sync_every: int | None = None,
    threads: int | None = None,
    judge: Judge | None = None,
    refill: Refill | None = None,
    on_done: OnDone | None = None,
) -> list[MemberResult]:
    """Train trials that share data, model, batch size, epochs and optimizer as one population.

    Args:
        trials: every trial with its LR resolved; `form_populations` says which may go together.
        data: the loaded dataset (each member takes its own `train_fraction` subset of it).
        emit: called as emit(i, rows) with trial i's metric rows (name, value, step) in chunks,
            in training order: the rows LRStudyCallback would log for that trial run alone.
        accelerator: "cpu", "cuda"/"gpu" or any Lightning accelerator; default the trials' own.
        dtype: float32 (the study path) or float64.
        sync_every: steps per host copy; default as LRStudyCallback (8 on CPU, 64 otherwise).
        threads: torch CPU threads; default the largest `threads` of the trials.
        judge: successive halving's rung judge (`execute/halving.population_judge`): at each
            rung of the trials' `halving`, the members it stops leave the stack, and the others
            go on exactly as they would have (members never interact).
        refill: where freed slots find new work: called at an epoch's end with the number of
            free slots (the population's starting size less its members), it returns up to that
            many trials of the same shape, which start training with the next epoch.
        on_done: on_done(i, result) as member i stops (the others still training).

    Returns:
        One MemberResult (a TrialResult with the divergence step and reason) per trial, in
        order, then one per trial that joined, in the order they joined.

    Raises:
        NotVectorisable: the model cannot be batched with vmap (a ValueError; nothing has trained,
            so the caller can run these trials with run_trial).
        ValueError: trials that cannot share a population, or a setting the solo trial rejects.
    """
    module = fit_population(
        trials,
        data,
        emit=emit,
        accelerator=accelerator,
        dtype=dtype,
        sync_every=sync_every,
        threads=threads,
        judge=judge,
        refill=refill,
        on_done=on_done,
    )
    return [module.results[i] for i in range(len(module.trials))]
