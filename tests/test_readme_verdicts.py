"""The README's verdict table is the generator's output, never a hand-written one.

`make catalogue` (`bench/catalogue.py --readme README.md`) rewrites the block between the
README's markers with `readme_block(verdict_rows(...))`. Here: the generator is a pure function
of the verdicts (a fixed synthetic set, its exact Markdown), its output reads back into the same
verdicts, rewriting the block touches nothing else, and the README's block is exactly what the
generator prints for the verdicts it shows (or the placeholder, before a catalogue run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lrstudy.report.catalogue import (
    README_BEGIN,
    README_END,
    README_PLACEHOLDER,
    StudyEntry,
    VerdictRow,
    markdown_table,
    parse_verdicts_markdown,
    readme_block,
    readme_section,
    verdict_rows,
    with_readme_block,
)
from lrstudy.report.claims import CLAIMS, ClaimResult

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    VerdictRow("lr_regimes", "too_low_slow", "Too low an LR converges slowly.", "supported",
               "steps to halfway on held-out seeds: too low − appropriate = +0.135 ± 0.010 se"),
    VerdictRow("lr_regimes", "too_high_fast_at_first",
               "Too high an LR makes fast progress at first.", "not_supported",
               "appropriate − too high = −0.823 ± 0.043 se | slower"),
    VerdictRow("warmup", "warmup_allows_higher_lr", "Warmup lets a higher peak LR train stably.",
               "inconclusive", "sgd: +0.09 ±\n0.06 decades"),
    VerdictRow("generalization", "larger_lr_more_robust",
               "A larger LR gives a model more robust to input noise.", "skipped",
               "needs validation accuracy; this study logged none"),
]  # fmt: skip
EXPECTED = """\
| claim | check | study | verdict | evidence |
|---|---|---|---|---|
| Too low an LR converges slowly. | `too_low_slow` | `lr_regimes` | **supported** | steps to halfway on held-out seeds: too low − appropriate = +0.135 ± 0.010 se |
| Too high an LR makes fast progress at first. | `too_high_fast_at_first` | `lr_regimes` | **not supported** | appropriate − too high = −0.823 ± 0.043 se \\| slower |
| Warmup lets a higher peak LR train stably. | `warmup_allows_higher_lr` | `warmup` | **inconclusive** | sgd: +0.09 ± 0.06 decades |
| A larger LR gives a model more robust to input noise. | `larger_lr_more_robust` | `generalization` | **skipped** | needs validation accuracy; this study logged none |

In short: 4 claims, 1 supported, 1 not supported, 1 inconclusive, 1 skipped."""  # noqa: E501


def test_the_generator_prints_exactly_this_for_these_verdicts() -> None:
    assert readme_block(ROWS) == EXPECTED
    assert readme_block(ROWS) == readme_block(list(ROWS))  # pure: same verdicts, same text
    assert readme_block([]) == README_PLACEHOLDER


def test_the_table_reads_back_into_the_same_verdicts() -> None:
    back = parse_verdicts_markdown(readme_block(ROWS))
    # the one change: whitespace inside a cell is one space (a table row is one line)
    assert back == [*ROWS[:2], VerdictRow(**{**ROWS[2].__dict__, "reason": "sgd: +0.09 ± 0.06 decades"}), ROWS[3]]  # fmt: skip
    assert parse_verdicts_markdown(README_PLACEHOLDER) == []
    with pytest.raises(ValueError, match="table head"):
        parse_verdicts_markdown("| claim | study | measured | verdict |\n|---|---|---|---|")


def test_the_catalogues_table_is_the_same_generator() -> None:
    results = [ClaimResult(r.name, "f", r.statement, "rule", "lr-sensitivity", r.verdict, r.reason,
                           (), None) for r in ROWS if r.study == "lr_regimes"]  # fmt: skip
    entries = [StudyEntry("lr_regimes", "lr_regimes/index.html", 4, results, None, None)]
    assert verdict_rows(entries) == ROWS[:2]
    assert markdown_table(entries) == "\n".join(EXPECTED.split("\n")[:4])


def test_rewriting_the_block_changes_only_the_block() -> None:
    text = f"# Title\n\nbefore\n\n{README_BEGIN}\nold, hand-written\n{README_END}\n\nafter\n"
    new = with_readme_block(text, readme_block(ROWS))
    assert new == f"# Title\n\nbefore\n\n{README_BEGIN}\n{EXPECTED}\n{README_END}\n\nafter\n"
    assert with_readme_block(new, readme_block(ROWS)) == new  # idempotent
    assert readme_section(new) == EXPECTED
    for broken in ("no markers", f"{README_END}\n{README_BEGIN}", f"{README_BEGIN}\n" * 2):
        with pytest.raises(ValueError):
            with_readme_block(broken, "x")


def test_the_readme_block_is_exactly_what_the_generator_prints() -> None:
    block = readme_section((ROOT / "README.md").read_text(encoding="utf-8"))
    rows = parse_verdicts_markdown(block)
    assert readme_block(rows) == block, "the README's verdict table is not the generator's output"
    for r in rows:  # and the verdicts it shows are of claims this lrstudy checks, in its words
        assert r.name in CLAIMS and r.statement == CLAIMS[r.name].statement


def test_the_catalogue_script_rewrites_the_readme_only_for_the_whole_catalogue(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "catalogue.py"), "--only", "momentum", "--readme",
         str(tmp_path / "README.md"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "--readme writes the whole catalogue" in done.stderr
    make = (ROOT / "Makefile").read_text()
    assert "bench/catalogue.py --readme README.md" in make.split("\ncatalogue:")[1].split("\n\n")[0]
