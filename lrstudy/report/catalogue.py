"""The catalogue page: one index linking every study's report, with each claim's verdict and a
thumbnail of its key figure.

    build_catalogue([("sqlite:///reports/catalogue/mlflow.db", "lr_regimes"), ...])
        -> reports/index.html, reports/<study>/index.html, reports/<study>/key-figure.svg

Each study's report is (re)built from its store by `generate_report`, exactly as `lrstudy report`
builds it, so the index shows the verdicts the reports show. Like the rest of the report stage it
reads MLflow alone and never imports torch.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lrstudy.report.build import generate_report, templates_dir, write_atomically
from lrstudy.report.claims import VERDICT_TEXT, VERDICTS, ClaimResult
from lrstudy.report.claims.evidence import SKIPPED
from lrstudy.report.context import FIGURE_TITLES, claim_chip, claims_summary

DEFAULT_FIGURE = "lr-sensitivity"  # a study without claims: its central figure
KEY_FIGURE = "key-figure"  # file name (without suffix) of the thumbnail next to a study's report


@dataclass
class StudyEntry:
    """One study on the index page."""

    study: str
    href: str  # the report, relative to the index
    n_runs: int
    claims: list[ClaimResult]
    figure: str | None  # figure id of the thumbnail
    thumbnail: str | None  # its file, relative to the index


@dataclass
class CatalogueResult:
    path: Path
    html: str
    studies: list[StudyEntry]
    seconds: dict[str, float] = field(default_factory=dict)  # study -> seconds to report it


def write_thumbnail(figure: dict, folder: Path) -> str:
    """Write a rendered figure (inline SVG or PNG data URI) beside a report; returns its file
    name. A file of its own keeps the index page small and lets the browser scale it."""
    if figure["kind"] == "svg":
        name = f"{KEY_FIGURE}.svg"
        write_atomically(folder / name, figure["markup"])
    else:
        name = f"{KEY_FIGURE}.png"
        data = base64.b64decode(figure["markup"].split(",", 1)[1])
        (folder / name).write_bytes(data)
    return name


def _key_figure(claims: list[ClaimResult], figures: dict) -> str | None:
    for fig in [c.figure for c in claims] + [DEFAULT_FIGURE]:
        if fig in figures:
            return fig
    return None


def report_entry(tracking_uri: str, study: str, out_dir: Path) -> StudyEntry:
    """Build one study's report (and its thumbnail) and describe it for the index."""
    result = generate_report(tracking_uri, study=study, out_dir=out_dir)
    folder = result.path.parent
    fig = _key_figure(result.claims, result.figures)
    thumb = write_thumbnail(result.figures[fig], folder) if fig else None
    rel = folder.relative_to(out_dir).as_posix()
    return StudyEntry(study, f"{rel}/index.html", result.n_runs, result.claims, fig,
                      f"{rel}/{thumb}" if thumb else None)  # fmt: skip


# The README's verdict table lives between these markers; `make catalogue` (bench/catalogue.py
# --readme) rewrites it from the computed verdicts, and a test checks it is the generator's output.
README_BEGIN = "<!-- verdicts:begin -->"
README_END = "<!-- verdicts:end -->"
README_PLACEHOLDER = (
    "_No verdicts yet: `make catalogue` fills this table from the computed verdicts._"
)
_HEAD = ("| claim | check | study | verdict | evidence |", "|---|---|---|---|---|")


@dataclass(frozen=True)
class VerdictRow:
    """One claim's computed verdict in one study, as the README table shows it."""

    study: str
    name: str
    statement: str
    verdict: str  # one of claims.VERDICTS (or "skipped")
    reason: str


def verdict_rows(entries: Sequence[StudyEntry]) -> list[VerdictRow]:
    """The catalogue's verdicts, in page order."""
    return [VerdictRow(e.study, c.name, c.statement, c.verdict, c.reason)
            for e in entries for c in e.claims]  # fmt: skip


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def verdicts_markdown(rows: Sequence[VerdictRow]) -> str:
    """The verdicts as a Markdown table, evidence in words: a pure function of the rows."""
    lines = list(_HEAD)
    for r in rows:
        lines.append(f"| {_cell(r.statement)} | `{r.name}` | `{r.study}` | "
                     f"**{VERDICT_TEXT[r.verdict]}** | {_cell(r.reason)} |")  # fmt: skip
    return "\n".join(lines)


def markdown_table(entries: Sequence[StudyEntry]) -> str:
    """The claims and their verdicts as a Markdown table (the README's), evidence in words."""
    return verdicts_markdown(verdict_rows(entries))


def readme_block(rows: Sequence[VerdictRow]) -> str:
    """What goes between the README's markers: the table and a one-line count, or the
    placeholder when there are no verdicts."""
    if not rows:
        return README_PLACEHOLDER
    shown = [*VERDICTS, *([SKIPPED] if any(r.verdict == SKIPPED for r in rows) else [])]
    counts = ", ".join(f"{sum(r.verdict == v for r in rows)} {VERDICT_TEXT[v]}" for v in shown)
    return f"{verdicts_markdown(rows)}\n\nIn short: {len(rows)} claims, {counts}."


def parse_verdicts_markdown(block: str) -> list[VerdictRow]:
    """The rows of a `readme_block` (the inverse of `verdicts_markdown`, for the README check).

    Raises:
        ValueError: the block is not a table this generator writes.
    """
    if block.strip() == README_PLACEHOLDER:
        return []
    lines = block.strip().split("\n")
    if tuple(lines[:2]) != _HEAD:
        raise ValueError(f"not the generator's table head: {lines[:2]}")
    by_text = {t: v for v, t in VERDICT_TEXT.items()}
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 5:
            raise ValueError(f"a row of {len(cells)} cells: {line}")
        statement, name, study, verdict, reason = cells
        rows.append(VerdictRow(study.strip("`"), name.strip("`"), statement,
                               by_text[verdict.strip("*")], reason))  # fmt: skip
    return rows


def readme_section(text: str) -> str:
    """The block between the README's markers.

    Raises:
        ValueError: the markers are missing, repeated or out of order.
    """
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise ValueError(f"needs exactly one {README_BEGIN} and one {README_END}")
    head, rest = text.split(README_BEGIN)
    if README_END not in rest:
        raise ValueError(f"{README_END} comes before {README_BEGIN}")
    return rest.split(README_END)[0].strip("\n")


def with_readme_block(text: str, block: str) -> str:
    """`text` (a README) with the block between its markers replaced by `block`."""
    readme_section(text)  # checks the markers
    head, rest = text.split(README_BEGIN)
    tail = rest.split(README_END)[1]
    return f"{head}{README_BEGIN}\n{block}\n{README_END}{tail}"


def _context(entries: list[StudyEntry], generated: datetime) -> dict:
    from lrstudy import __version__

    claims = [c for e in entries for c in e.claims]
    return {
        "summary": claims_summary(claims) if claims else "no claims declared",
        "chips": [claim_chip(v) for v in VERDICTS],
        "rows": [
            {
                "study": e.study,
                "href": e.href,
                "statement": c.statement,
                "name": c.name,
                "verdict": claim_chip(c.verdict),
                "reason": c.reason,
            }
            for e in entries
            for c in e.claims
        ],  # fmt: skip
        "studies": [
            {
                "study": e.study,
                "href": e.href,
                "n_runs": e.n_runs,
                "thumbnail": e.thumbnail,
                "figure": e.figure,
                "figure_title": FIGURE_TITLES.get(e.figure or "", e.figure),
                "claims": [
                    {"statement": c.statement, "name": c.name, "verdict": claim_chip(c.verdict)}
                    for c in e.claims
                ],
            }
            for e in entries
        ],  # fmt: skip
        "generated": generated.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
    }


def build_catalogue(
    studies: Sequence[tuple[str, str]],
    out_dir: str | Path = "reports",
    *,
    now: datetime | None = None,
) -> CatalogueResult:
    """Report every study and write `<out_dir>/index.html` linking them.

    Args:
        studies: (tracking URI, study name) pairs, in page order; the stores may differ.
        out_dir: where the reports and the index go.
        now: fixes the page's time stamp.
    Returns:
        The index path and HTML, and per study what the page shows.
    Raises:
        UserInputError: a study that is not in its store or has no finished trials.
    """
    import jinja2

    out = Path(out_dir)
    entries, seconds = [], {}
    for uri, study in studies:
        t0 = time.perf_counter()
        entries.append(report_entry(uri, study, out))
        seconds[study] = time.perf_counter() - t0
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    html = env.get_template("catalogue.html.j2").render(
        **_context(entries, now or datetime.now(timezone.utc))
    )
    path = out / "index.html"
    write_atomically(path, html)
    return CatalogueResult(path, html, entries, seconds)
