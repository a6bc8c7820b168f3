"""The progress count counts trials (issue 17, item 2): every finished trial's line carries its own
number, once, whatever the workers and engines; output that is not a terminal gets plain lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console

from lrstudy.execute.progress import StudyProgress
from tests.conftest import ROOT, smoke_study

LINE = re.compile(r"^\[(\d+)/(\d+)\] ")


def _event(key: str, outcome: str = "ok", **extra) -> dict:
    return {"type": "trial", "key": key, "name": f"sgd lr=0.1 constant seed={key}",
            "config_key": "c", "outcome": outcome, "val_acc": 0.5, "seconds": 1.0, "lr": 0.1,
            "lr_source": "spec", **extra}  # fmt: skip


def test_numbers_are_given_once_per_trial_key(tmp_path: Path) -> None:
    out = tmp_path / "log.txt"
    with out.open("w") as fh:
        p = StudyProgress(Console(file=fh, width=60), "s", 5, {"done0"})
        with p:
            # another worker's event for a trial whose 'done elsewhere' arrived first, repeats,
            # a failed trial (no number) and its successful redo
            p.on_event({"type": "done_elsewhere", "key": "a"})
            p.on_event(_event("b"))
            p.on_event(_event("a"))
            p.on_event({"type": "done_elsewhere", "key": "b"})
            p.on_event(_event("b"))
            p.on_event(_event("c", outcome="failed", error="boom"))
            p.on_event(_event("c"))
            p.on_event(_event("d", name="x" * 200))  # long: still one line (no wrapping)
    lines = out.read_text().splitlines()
    numbers = [int(m[1]) for ln in lines if (m := LINE.match(ln))]
    assert sorted(numbers) == [2, 3, 4, 5] and len(lines) == 6
    assert sum(ln.startswith("[-/5]") for ln in lines) == 2  # the repeat and the failed attempt
    assert "━" not in out.read_text()  # no bar in a file


def test_real_study_with_two_workers_and_populations_piped_to_a_file(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "progress", epochs=1)
    log = tmp_path / "out.txt"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri,
           "--no-report", "--workers", "2", "--engine", "population"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text
    counts = [(int(m[1]), int(m[2])) for ln in text.splitlines() if (m := LINE.match(ln))]
    total = counts[0][1]
    assert total == 12
    assert Counter(n for n, _ in counts) == Counter(range(1, total + 1)), text
    assert "━" not in text and "\r" not in text  # plain lines, no bar
    # populations carry their members' final val acc back: the summary ranks them, and never
    # claims the study's metric went unlogged (it did, after a change, on the quickstart)
    assert "best: " in text and "was never logged" not in text, text


def test_cli_best_line_says_when_the_winner_is_an_end_of_the_grid() -> None:
    from lrstudy.execute.study import StudyRun
    from lrstudy.report.best import BestConfig, edge_note
    from lrstudy.summary import summary_lines

    best = BestConfig("sgd lr=0.1", "k", 0.9, float("nan"), 1, edge=edge_note(0.1, [0.01, 0.1]))
    run = StudyRun(4, 0, "1", "p", outcomes={"ok": 4}, best=best)
    assert summary_lines("s", run)[-1] == (
        "best: sgd lr=0.1: final val acc 0.900 (n=1); the highest LR tried: the optimum may lie higher"
    )
    middle = BestConfig(
        "sgd lr=0.1", "k", 0.9, float("nan"), 1, edge=edge_note(0.1, [0.01, 0.1, 1])
    )
    assert summary_lines("s", StudyRun(4, 0, "1", "p", best=middle))[-1].endswith("(n=1)")


def test_on_a_terminal_the_bar_counts_what_the_lines_number() -> None:
    import io

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    p = StudyProgress(console, "s", 4, set())
    with p:
        p.on_event({"type": "done_elsewhere", "key": "a"})
        p.on_event(_event("b"))
        p.on_event(_event("a"))
        p.on_event(_event("b"))
        numbers = [int(m[1]) for ln in console.file.getvalue().splitlines()
                   if (m := re.search(r"\[(\d+)/4\] ", ln))]  # fmt: skip
        assert p._progress.tasks[0].completed == max(numbers) == len(p.done_keys) == 2
