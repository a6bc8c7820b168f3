"""Report stage: one self-contained HTML page per study, built from MLflow alone.

    build_report(tracking_uri, study="quickstart")  ->  reports/quickstart/index.html

Reads through `lrstudy.report.read` (the only MLflow reader), computes metrics and verdicts
(`lrstudy.report.analyze`, `lrstudy.report.diagnose`), draws figures (`lrstudy.report.plots`),
renders the jinja2 template of the top-level templates/ (shipped in the wheel as
`lrstudy/templates/`), then writes verdict tags and the artifact back through
`lrstudy.track.annotate`. No torch import anywhere on this path.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from lrstudy import names as N
from lrstudy.report.diagnose import run_verdicts

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from lrstudy.report.claims import ClaimResult
    from lrstudy.report.results import StudyData


def templates_dir() -> Path:
    """The report templates: the source tree's top-level templates/ (editable installs, tests),
    else the copy a wheel carries as package data `lrstudy/templates/`."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "templates", package / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"report template report.html.j2 not found beside {package}")


@dataclass
class ReportResult:
    path: Path
    html: str
    n_runs: int
    n_points_read: int  # metric values read: history points (duplicates included) + summaries
    n_points_kept: int  # history points after dropping re-logged steps
    n_points_plotted: int  # curve points drawn from the kept history (seed means, bins)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    claims: list[ClaimResult] = field(default_factory=list)  # the Claims section, as computed
    figures: dict[str, dict] = field(default_factory=dict)  # figure id -> render() (kind, markup)


class ReportOptions(TypedDict, total=False):
    """What to report and how; the keyword arguments of `build_report` and `generate_report`.

    study / experiment / parent_run_id: what to report; at least one.
    out_dir: where `<study>/index.html` goes (default reports/).
    log_artifact: also log the page as `report/index.html` of the study's newest parent run
        (default True).
    write_verdicts: tag every trial run with its verdict `lrstudy.diagnosis` (default True).
    claims: the claims to check (registry names); default: the `claims` of the spec that the
        study's newest parent run logged as its `study.yaml` artifact.
    """

    study: str | None
    experiment: str | None
    parent_run_id: str | None
    out_dir: Path
    log_artifact: bool
    write_verdicts: bool
    claims: list[str] | None


def write_atomically(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename: several processes may finish one
    study at once, and a reader must never see half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dir_name(name: str) -> str:
    """A study name as one safe path component ('<script>' and '../x' included)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def declared_claims(client, parent: dict | None) -> list[str]:
    """The claims a study declares: `claims` of the resolved spec that its newest parent run
    logged (artifact `study.yaml`). Read here, next to the other MLflow calls of this module,
    because the claim checks themselves never touch MLflow; [] for plugin runs, specs from
    before claims existed, or an artifact store out of reach (the page then has no Claims)."""
    if parent is None:
        return []
    import yaml

    # MLflow draws a progress bar for every download, even of one small file; not for us.
    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(parent["run_id"], N.SPEC_ARTIFACT, tmp)
            spec = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a missing artifact only means no Claims section
        return []
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved
    claims = spec.get("claims") if isinstance(spec, dict) else None
    return [str(c) for c in claims] if isinstance(claims, list) else []


def render_html(
    sr,
    data: StudyData,
    figs: dict[str, dict],
    tracking_uri: str,
    generated: datetime,
    claims: list[ClaimResult] | None = None,
) -> str:
    import jinja2

    from lrstudy.report.context import page_context

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,  # every study/param/tag string is escaped; figures are marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    ctx = page_context(sr, data, figs, tracking_uri, generated, claims or [])
    return env.get_template("report.html.j2").render(**ctx)


STAGES = ["import mlflow", "open store", "search runs", "histories+analysis", "figures", "html",
          "write-back"]  # fmt: skip


def generate_report(
    tracking_uri: str, *, now: datetime | None = None, **options: Unpack[ReportOptions]
) -> ReportResult:
    """`build_report`, returning the HTML, the point counts and the stage timings as well (the
    bench prints them); `now` fixes the page's time stamp."""
    unknown = sorted(set(options) - set(ReportOptions.__annotations__))
    if unknown:  # what a keyword-only signature would refuse
        raise TypeError(f"generate_report() got unexpected keyword argument(s): {unknown}")
    t = [time.perf_counter()]
    from lrstudy.report.claims import Frames, run_claims
    from lrstudy.report.figures import render_figures
    from lrstudy.report.read import find_study
    from lrstudy.report.results import collect
    from lrstudy.track import annotate
    from lrstudy.track.store import open_client

    t.append(time.perf_counter())
    # Reading never creates a store: a mistyped sqlite path or a dead server is a one-line error.
    # (mlflow is imported lazily in there: importing it alone takes ~1 s.)
    client = open_client(tracking_uri, create=False)
    t.append(time.perf_counter())
    sr = find_study(client, study=options.get("study"), experiment=options.get("experiment"),
                    parent_run_id=options.get("parent_run_id"))  # fmt: skip
    t.append(time.perf_counter())
    data = collect(client, sr)
    names = options.get("claims")
    names = declared_claims(client, sr.parent) if names is None else list(names)
    claims = run_claims(names, Frames.from_study(data, sr.range_tests)) if names else []
    t.append(time.perf_counter())
    figs = render_figures(sr, data)
    t.append(time.perf_counter())
    html = render_html(sr, data, figs, tracking_uri, now or datetime.now(timezone.utc), claims)
    out_dir = Path(options.get("out_dir") or "reports")
    path = out_dir / _dir_name(sr.study or sr.experiment_name) / "index.html"
    write_atomically(path, html)
    t.append(time.perf_counter())
    if options.get("write_verdicts", True):
        current = sr.runs.set_index("run_id").get(f"tags.{N.TAG_DIAGNOSIS}")
        annotate.write_verdicts(
            client, run_verdicts(data.configs), None if current is None else current.to_dict()
        )
    if options.get("log_artifact", True) and sr.parent is not None:
        annotate.log_report(client, sr.parent["run_id"], path)
    t.append(time.perf_counter())
    return ReportResult(
        path=path,
        html=html,
        n_runs=len(sr.runs),
        n_points_read=data.n_history_read + data.n_summary_read,
        n_points_kept=len(data.history),
        n_points_plotted=sum(f["points"] for f in figs.values()),
        seconds={s: t[i + 1] - t[i] for i, s in enumerate(STAGES)},
        claims=claims,
        figures=figs,
    )


def build_report(tracking_uri: str, **options: Unpack[ReportOptions]) -> Path:
    """Write `<out_dir>/<study>/index.html` for a study (or an experiment of plugin runs).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///..., http://...).
        **options: `ReportOptions`: study / experiment / parent_run_id (at least one), out_dir,
            log_artifact, write_verdicts.
    Returns:
        Path of the written index.html.
    Raises:
        UserInputError: no such experiment / run / study, or no finished trial runs.
    """
    return generate_report(tracking_uri, **options).path
