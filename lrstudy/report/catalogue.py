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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lrstudy.report.build import generate_report, templates_dir, write_atomically
from lrstudy.report.claims import VERDICTS, ClaimResult
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


def markdown_table(entries: Sequence[StudyEntry]) -> str:
    """The claims and their verdicts as a Markdown table (for the README), evidence in words."""
    lines = ["| claim | study | verdict | evidence |", "|---|---|---|---|"]
    for e in entries:
        for c in e.claims:
            why = c.reason.replace("|", "/")
            lines.append(f"| {c.statement} | `{e.study}` | **{c.verdict_text}** | {why} |")
    return "\n".join(lines)


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
