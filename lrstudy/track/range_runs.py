"""Range-test runs in MLflow: write one (tag kind=range_test) and find the newest for a key.

Layout (the report reads it): tags `lrstudy.kind=range_test`, `lrstudy.study`,
`lrstudy.range_test_key`; params `optimizer`, `suggestion` (the recommended rule), `lr_min`,
`lr_max`, `steps`, `mode` and more; per-step metrics `lr`, `loss`, `smoothed_loss`; one
`suggestion/<rule>` metric per rule that has an answer; artifact `range_test.png`.
A range test is a few hundred points, so it is written in a few synchronous `log_batch` calls
after the test rather than through the background `MetricSink`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrstudy import names
from lrstudy.names import (  # noqa: F401 - re-exported for callers of this module
    FIGURE_ARTIFACT,
    PARAM_LR_MAX,
    PARAM_LR_MIN,
    PARAM_MODE,
    PARAM_OPTIMIZER,
    PARAM_STEPS,
    PARAM_SUGGESTION,
    TAG_RANGE_TEST_KEY,
)
from lrstudy.track import runs as track_runs

_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def log_range_test(
    client,
    experiment_id: str,
    *,
    name: str,
    study: str | None,
    key: str | None,
    params: dict[str, Any],
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestions: dict[str, float | None],
    figure=None,
) -> str:
    """Create a finished range-test run and return its id.

    Args:
        params: at least optimizer, suggestion, lr_min, lr_max, steps, mode.
        lrs, losses, smoothed: one value per step run; non-finite losses are not logged.
        suggestions: rule -> LR, None for a rule without an answer (not logged).
        figure: a matplotlib Figure, stored as `range_test.png`.
    """
    from mlflow.entities import Metric

    tags = {names.TAG_KIND: names.KIND_RANGE_TEST, names.TAG_OUTCOME: names.OUTCOME_RUNNING}
    if study:
        tags[names.TAG_STUDY] = study
    if key:
        tags[TAG_RANGE_TEST_KEY] = key
    run_id = track_runs.start_run(client, experiment_id, name=name, tags=tags)
    outcome = names.OUTCOME_FAILED
    try:
        track_runs.log_params(client, run_id, params)
        ts = int(time.time() * 1000)
        metrics = []
        for step, (lr, loss, sm) in enumerate(zip(lrs, losses, smoothed, strict=True)):
            metrics.append(Metric(names.LR, float(lr), ts, step))
            if _finite(loss):
                metrics.append(Metric(names.RT_LOSS, float(loss), ts, step))
            if _finite(sm):
                metrics.append(Metric(names.RT_SMOOTHED, float(sm), ts, step))
        for rule, lr in suggestions.items():
            if lr is not None:
                metrics.append(Metric(names.RT_SUGGESTION_PREFIX + rule, float(lr), ts, 0))
        for i in range(0, len(metrics), _MAX_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _MAX_BATCH], synchronous=True)
        if figure is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / FIGURE_ARTIFACT
                figure.savefig(path, dpi=110, metadata={"Software": None})
                client.log_artifact(run_id, str(path))
        outcome = names.OUTCOME_OK
    finally:
        track_runs.end_run(client, run_id, outcome=outcome)
    return run_id


def latest_range_test(client, experiment_id: str, key: str):
    """The newest finished, successful range-test run with this key, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{names.TAG_KIND}` = '{names.KIND_RANGE_TEST}' "
            f"and tags.`{TAG_RANGE_TEST_KEY}` = '{key}' "
            f"and tags.`{names.TAG_OUTCOME}` = '{names.OUTCOME_OK}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def recorded_suggestion(run) -> tuple[float, str] | None:
    """(LR, rule) a range-test run recommended, or None when it recommended nothing."""
    rule = run.data.params.get(PARAM_SUGGESTION)
    lr = run.data.metrics.get(names.RT_SUGGESTION_PREFIX + rule) if rule else None
    return (float(lr), rule) if lr is not None else None


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
