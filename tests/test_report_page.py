"""What a reader of the page sees, against a real sqlite store: a study without a target, an
optimizer that learns nothing, LRs with more digits than the page shows, the footer's counts and
the crowned best configuration."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.report.best import best_config
from lrstudy.report.build import generate_report
from lrstudy.report.results import load_results
from tests.report_fixtures import SyntheticStudy, write_study

SPEC = SyntheticStudy(
    study="page",
    optimizers=("adam", "sgd", "rmsprop"),
    lrs={"adam": (1e-4, 0.003139, 0.1), "sgd": (0.03, 0.1, 0.3), "rmsprop": (1e-3, 1e-2)},
    epochs=3,
    steps_per_epoch=20,
    target=None,
    stuck=("rmsprop",),  # learns nothing at any LR: accuracy at chance (1/10)
)


class Text(HTMLParser):
    """The page's visible text (attributes such as data-v sort keys left out), per element."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.chunks.append(data.strip())


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    uri = f"sqlite:///{root}/mlflow.db"
    written = write_study(uri, SPEC, root / "artifacts")
    result = generate_report(uri, study="page", out_dir=root / "reports", log_artifact=False)
    text = Text()
    text.feed(result.html)
    return uri, written, result, text.chunks


def rows(html: str, table_class: str) -> list[list[str]]:
    body = re.search(rf'<table class="{table_class}">(.*?)</table>', html, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S) for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]  # fmt: skip


def test_a_study_without_target_says_so_instead_of_a_dangling_comparison(page):
    _, _, result, chunks = page
    i = chunks.index("target")
    assert chunks[i + 1] == "none"
    assert not re.search(r"[≤≥]\s*<", result.html)  # no "target ≤" with nothing after it
    steps = [r[2] for r in rows(result.html, "diagnosis") if len(r) == 7]
    assert steps and set(steps) == {"no target set"}


def test_lrs_show_three_significant_digits_everywhere(page):
    _, _, result, chunks = page
    visible = " ".join(chunks)
    assert "0.00314" in visible
    assert "0.003139" not in visible
    # every LR cell of the diagnosis table has at most 3 significant digits
    for r in rows(result.html, "diagnosis"):
        if len(r) == 7:
            digits = re.sub(r"^0\.0*|e.*$|\.", "", r[0])
            assert len(digits) <= 3, r[0]


def test_an_lr_stuck_at_chance_never_reads_as_healthy(page):
    uri, written, result, _ = page
    df = load_results("page", tracking_uri=uri)
    stuck = df[df["optimizer"] == "rmsprop"]
    assert set(stuck["diagnosis"]) == {"at_chance"}
    assert stuck["diagnosis_reason"].str.contains(r"at chance \(0\.\d+ vs 1/10 = 0\.100").all()
    assert "no LR of this family learned" in stuck["diagnosis_reason"].iloc[0]
    client = MlflowClient(uri)  # the verdict reaches the runs' tags as well
    tags = {client.get_run(r).data.tags.get(N.TAG_DIAGNOSIS) for r in stuck["run_id"]}
    assert tags == {"at_chance"}
    assert ", 2 at chance" in result.html  # the summary line counts them


def test_the_crowned_configuration_is_best_config_and_its_diagnosis_calls_it_good(page):
    uri, _, result, _ = page
    df = load_results("page", tracking_uri=uri)
    best = best_config(df)
    assert best is not None
    crown = re.search(r'<div class="best" id="best"><strong>Best configuration</strong> — (.*?)</div>', result.html).group(1)  # fmt: skip
    assert crown == best.text()
    assert set(df.loc[df["config"] == best.name, "diagnosis"]) == {"good"}
    # seed-mean of the final val accuracy, sample std, n seeds
    accs = df.loc[df["config"] == best.name, "final_val_acc"]
    assert (best.mean, best.std, best.n) == pytest.approx((accs.mean(), accs.std(), 2))
    alive = df[~df.groupby("config")["diverged"].transform("any")]
    assert best.mean == pytest.approx(alive.groupby("config")["final_val_acc"].mean().max())


def test_footer_counts_add_up(page):
    _, _, result, _ = page
    footer = re.search(r'<p class="footnote" id="counts">(.*?)</p>', result.html, re.S).group(1)
    numbers = [int(n) for n in re.findall(r"(\d+) (?:metric values|history points|latest|points)", footer)]  # fmt: skip
    read, history, summary, kept, plotted = numbers
    assert read == history + summary == result.n_points_read
    assert kept == result.n_points_kept and plotted == result.n_points_plotted
    # the first trial re-logged 10 steps (a resumed run): read, then dropped
    assert kept == history - 10
    assert 0 < plotted <= kept  # curves are drawn from the kept points, never more
