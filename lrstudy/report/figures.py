"""Which figures a report has, and rendering them (in two forked processes where possible).

Rendering is the largest stage we control and the figures are independent: on the 2-core box
(load ~1) a pool of 2 forked workers took the bench's figure stage from 1.75 s to 0.9 s. Workers
inherit the frames through fork (nothing is pickled but the rendered markup); elsewhere (no fork,
1 CPU) the same jobs run in-process. The result does not depend on the path taken.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from lrstudy import names as N
from lrstudy.report.analyze import swept_axes

if TYPE_CHECKING:
    from lrstudy.report.results import StudyData

_SHARED: tuple | None = None  # (study runs, frames) for forked workers: set only while rendering


def figure_jobs(sr, data: StudyData) -> list[tuple[str, Callable]]:
    """(figure id, builder) for every figure this study gets. A builder returns a Figure, or
    (Figure, n) for figures drawn from metric histories (n = history points their curves use),
    or None when there is nothing to draw. Builders are lazy: listing the jobs costs nothing."""
    from lrstudy.report.plots import axes as PA
    from lrstudy.report.plots import curves as PC
    from lrstudy.report.plots import lr as P
    from lrstudy.report.plots import sensitivity as PS
    from lrstudy.report.search import search_summary
    from lrstudy.report.tpe_search import tpe_summary

    trials, configs, history = data.trials, data.configs, data.history

    def convergence():
        loss = PC.curves_data(trials, history, N.TRAIN_LOSS)
        right = data.metric.curve_key(set(history["key"].unique()) if len(history) else set())
        acc = PC.curves_data(trials, history, right[0]) if right else []
        if not (loss or acc):
            return None
        label = right[1] if right else ""
        return PC.convergence_figure(loss, acc, trials, label), PC.plotted_points(loss + acc)

    def grad_norm():
        panels = PC.curves_data(trials, history, N.GRAD_NORM)
        return (PC.grad_norm_figure(panels, trials), PC.plotted_points(panels)) if panels else None

    def schedules():
        sched = PC.schedules_data(trials, history)
        return (PC.schedules_figure(sched, trials), PC.plotted_points(sched)) if sched else None

    def axis_heatmap(axis: str):
        return lambda: PA.axis_heatmap_figure(
            PA.axis_heatmap_data(configs, axis, swept), axis, configs["optimizer"]
        )

    swept = swept_axes(trials)
    summary = search_summary(sr, trials)  # None unless successive halving ran
    # most expensive first, so two workers finish at about the same time
    jobs: list[tuple[str, Callable]] = [
        ("convergence", convergence),
        ("grad-norm", grad_norm),
        (
            "lr-sensitivity",
            lambda: PS.sensitivity_figure(
                PS.sensitivity_data(
                    configs,
                    trials,
                    sr.range_tests,
                    summary.points[summary.points["stopped"]] if summary is not None else None,
                )
            ),  # fmt: skip
        ),
        (
            "stability",
            lambda: P.stability_figure(P.stability_data(configs), P.stability_panels(configs)),
        ),
        ("outcomes", lambda: P.outcome_figure(P.outcome_data(configs))),
        ("schedules", schedules),
    ]
    jobs += [(f"axis-{a}", axis_heatmap(a)) for a in swept if a != "train_fraction"]
    if "train_fraction" in swept:
        jobs.append(
            (
                "learning-curves",
                lambda: PA.learning_curve_figure(PA.learning_curve_data(configs, swept)),
            )
        )
    tpe = tpe_summary(sr, trials, data.metric)  # None unless the study searched with TPE
    if tpe is not None:  # what TPE sampled, in order, and the best so far
        from lrstudy.report.plots import search as PSe
        from lrstudy.report.plots.style import family_style

        jobs.append(("search-tpe", lambda: PSe.tpe_figure(
            tpe.points, data.metric.label, family_style(configs))))  # fmt: skip
    if summary is not None:  # successive halving: what it tried and where it stopped
        from lrstudy.report.plots import search as PSe
        from lrstudy.report.plots.style import family_style

        jobs.append(("search", lambda: PSe.search_figure(
            summary.points, summary.rungs, summary.epochs, data.metric.name,
            family_style(configs))))  # fmt: skip
    if any(c.startswith("noise:") for c in configs.columns):
        jobs.append(
            (
                "robustness",
                lambda: PA.robustness_figure(PA.robustness_data(configs), configs["optimizer"]),
            )
        )
    return jobs


def _render_job(i: int) -> tuple[str, dict | None]:
    from lrstudy.report.plots.style import plot_style, render

    sr, data = _SHARED
    name, build = figure_jobs(sr, data)[i]
    with plot_style():
        built = build()
        if built is None:
            return name, None
        fig, points = built if isinstance(built, tuple) else (built, 0)
        return name, render(fig, name, points)


def _workers() -> int:
    if not sys.platform.startswith("linux"):  # fork is only safe to rely on here
        return 1
    return min(2, len(os.sched_getaffinity(0)))


def render_figures(sr, data: StudyData, workers: int | None = None) -> dict[str, dict]:
    """Render every figure; returns {figure id: render()} in a fixed order."""
    global _SHARED
    import lrstudy.report.plots.style  # noqa: F401  (import matplotlib once, before forking)

    n_jobs = len(figure_jobs(sr, data))
    workers = _workers() if workers is None else workers
    _SHARED = (sr, data)
    try:
        results = None
        if workers > 1 and n_jobs > 2:
            try:
                ctx = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                    results = list(pool.map(_render_job, range(n_jobs)))
            except Exception:  # a broken pool (sandbox, resource limits): render here instead
                results = None
        if results is None:
            results = [_render_job(i) for i in range(n_jobs)]
    finally:
        _SHARED = None
    return {name: r for name, r in results if r is not None}
