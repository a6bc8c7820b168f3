"""One study-level progress display for every worker, fed by the workers' events.

On a terminal: a bar (trials done/total, elapsed, ETA, best configuration so far, tracking-server
outage while it lasts) above one line per finished trial. Elsewhere (logs, CI): the lines only, never
wrapped, plus a line when an outage starts and when it ends. Events may arrive from several threads.

Counting: every trial key gets its number once, when it is first known to be finished (a trial
event, or a worker seeing it finished by someone else); a finished trial's line carries its key's
number, so with any workers and engines the numbers 1..N each appear at most once, and the bar's
count is the highest number given.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lrstudy import names
from lrstudy.report.best import BestConfig, best_config
from lrstudy.report.metric import DEFAULT, RankMetric


def config_label(trial_name: str) -> str:
    """A trial's name without its seed: the name of its configuration."""
    head, sep, tail = trial_name.rpartition(" seed=")
    return head if sep and tail.isdigit() else trial_name


def family_label(trial_name: str) -> str:
    """A trial's name without its seed and LR: its family (the LRs compared with each other)."""
    return re.sub(r"(^| )lr=\S+", "", config_label(trial_name)).strip()


def fmt_lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.3g}"


class _OutageColumn(ProgressColumn):
    """Live duration of a tracking outage, re-rendered on every refresh."""

    def __init__(self, progress: StudyProgress) -> None:
        super().__init__()
        self._owner = progress

    def render(self, task) -> Text:
        since = self._owner.outage_since
        if since is None:
            return Text("")
        return Text(
            f"tracking server unreachable for {time.monotonic() - since:.0f} s", style="bold red"
        )


class StudyProgress:
    """Counts trials by key (each once, whoever ran it) and tracks the best configuration."""

    def __init__(
        self,
        console: Console,
        name: str,
        total: int,
        done_keys: set[str],
        metric: tuple[str, str] | RankMetric | None = None,
    ) -> None:
        self.console = console
        self.total = total
        self.done_keys = set(done_keys)
        # the study's ranking metric (`StudySpec.rank_metric`): what `best` ranks by
        if not isinstance(metric, RankMetric):
            metric = RankMetric(*metric) if metric else DEFAULT
        self.metric = metric
        # trial key -> its number among the finished trials (those finished before: 1..k)
        self.numbers: dict[str, int] = {k: i for i, k in enumerate(sorted(self.done_keys), 1)}
        self._lined: set[str] = set()  # keys whose finished line was printed
        self.outage_since: float | None = None
        self.ran: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[best]}"),
            _OutageColumn(self),
            console=console,
            transient=False,
            disable=not console.is_terminal,  # logs and CI get the per-trial lines only
        )
        self._task = self._progress.add_task(
            name, total=total, completed=len(self.done_keys), best="best: -"
        )

    def seed_best(self, rows: list[tuple]) -> None:
        """Count earlier invocations' finished trials: (config key, name, final value of the
        ranking metric, diverged[, lr[, pruned]]) each."""
        for config_key, trial_name, value, diverged, *rest in rows:
            lr = rest[0] if rest else None
            self._add_result(config_key, trial_name, value, diverged, lr,
                             pruned=len(rest) > 1 and bool(rest[1]))  # fmt: skip
        self._progress.update(self._task, best=self.best_text())

    def _number(self, key: str) -> int:
        """The key's number among the finished trials, given on first sight."""
        if key not in self.numbers:
            self.numbers[key] = len(self.numbers) + 1
        self.done_keys.add(key)
        return self.numbers[key]

    def __enter__(self) -> StudyProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            kind = event.get("type")
            if kind == "trial":
                self._trial(event)
            elif kind == "done_elsewhere" and event["key"] not in self.done_keys:
                self._number(event["key"])
                self._progress.update(self._task, completed=len(self.done_keys))
            elif kind == "outage":
                self._outage(event.get("seconds"))

    def _value(self, e: dict[str, Any]) -> float | None:
        """The trial's final value of the ranking metric (final val acc for val/acc, max)."""
        if self.metric.is_val_acc and e.get("val_acc") is not None:
            return e["val_acc"]
        return e.get("metric_value")

    def _trial(self, e: dict[str, Any]) -> None:
        self.ran.append(e)
        finished = e["outcome"] in names.DONE_OUTCOMES
        acc, value = e.get("val_acc"), self._value(e)
        if finished and e["key"] not in self._lined:
            count = f"[{self._number(e['key'])}/{self.total}]"
            self._lined.add(e["key"])
            self._add_result(e["config_key"], e["name"], value,
                             e["outcome"] == names.OUTCOME_DIVERGED, e.get("lr"),
                             pruned=e["outcome"] == names.OUTCOME_PRUNED)  # fmt: skip
        else:  # not finished (failed, killed), or a second report of a counted trial: no number
            count = f"[-/{self.total}]"
        shown = ""
        if acc is not None and math.isfinite(acc):
            shown = f", val acc {acc:.3f}"
        if not self.metric.is_val_acc and value is not None and math.isfinite(value):
            shown += f", {self.metric.name} {self.metric.fmt(value)}"
        auto = " (auto)" if str(e.get("lr_source", "")).startswith("range_test") else ""
        worker = f" [w{e['worker']}]" if e.get("worker") else ""
        self._progress.console.print(
            f"{count} {e['name']}: {e['outcome']}"
            + (f" ({e['error']})" if e.get("error") else "")
            + shown
            + (f", lr {fmt_lr(e.get('lr'))}{auto}" if auto else "")
            + f" ({e['seconds']:.1f} s){worker}",
            highlight=False,
            markup=False,  # trial names and "[w1]" are text, not rich markup
            soft_wrap=True,  # one line per trial, also in a log file (rich wraps at 80 there)
        )
        self._progress.update(self._task, completed=len(self.done_keys), best=self.best_text())

    def _outage(self, seconds: float | None) -> None:
        now = time.monotonic()
        if seconds is None:
            if self.outage_since is not None:
                self._log(f"tracking server reachable again after {now - self.outage_since:.0f} s")
            self.outage_since = None
            return
        if self.outage_since is None:
            self.outage_since = now - seconds
            self._log("tracking server unreachable; metrics are kept and retried")

    def _log(self, text: str) -> None:
        if not self.console.is_terminal:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _add_result(
        self,
        config_key: str,
        trial_name: str,
        value: float | None,
        diverged: bool,
        lr: float | None = None,
        *,
        pruned: bool = False,
    ) -> None:
        self._results.append(
            {
                "config": config_label(trial_name),
                "family": family_label(trial_name),
                "config_key": config_key,
                "lr": math.nan if lr is None else float(lr),
                "metric": self.metric.name,
                "metric_mode": self.metric.mode,
                "metric_value": math.nan if value is None else float(value),
                "diverged": diverged,
                "pruned": pruned,
            }
        )

    def best(self) -> BestConfig | None:
        """The best configuration so far, by the report's one rule (`lrstudy.report.best`)."""
        return best_config(pd.DataFrame(self._results)) if self._results else None

    def best_text(self) -> str:
        b = self.best()
        return f"best {b.text()}" if b else "best: -"
