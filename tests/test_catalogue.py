"""Claims end to end: a study file declares them, a real study runs, its report shows the Claims
section with computed verdicts, and the catalogue index links every report with its verdicts.
Also the `claims:` field itself: one-line errors, and keys and spec hash that ignore it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lrstudy.api import run_study
from lrstudy.errors import UserInputError
from lrstudy.plan import plan_trials
from lrstudy.report.build import declared_claims, generate_report
from lrstudy.report.catalogue import build_catalogue, markdown_table
from lrstudy.report.claims import claim_names
from lrstudy.report.claims.lr_free import CLAIMS as LR_FREE_CLAIMS
from lrstudy.spec import load_spec, parse_spec
from lrstudy.track.store import open_client
from tests.report_fixtures import SyntheticStudy, write_study

ROOT = Path(__file__).resolve().parents[1]
CLAIMED = ["too_high_worse_final", "appropriate_best", "too_low_slow"]
# Seconds on a CPU: 6 trials of a small MLP on 600 MNIST-1D samples, one population.
TINY = f"""
name: tiny_claims
task:
  dataset: mnist1d
  model: mlp
  model_args: {{hidden: [32]}}
  data_args: {{num_samples: 600}}
train: {{epochs: 3, batch_size: 50}}
optimizers:
  - {{name: sgd, lr: [0.003, 0.1, 50.0], momentum: 0.9}}
seeds: 2
claims: [{", ".join(CLAIMED)}]
"""


class Links(HTMLParser):
    """Every href and img src of a page, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.srcs.append(a["src"])

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    d = tmp_path_factory.mktemp("tiny")
    study = d / "tiny.yaml"
    study.write_text(TINY)
    uri = f"sqlite:///{d}/mlflow.db"
    result = run_study(study, tracking_uri=uri, workers=1, report_dir=d / "reports")
    assert result.report_path is not None
    return uri, result.report_path, d


def test_the_report_of_a_real_study_shows_its_claims_with_computed_verdicts(tiny) -> None:
    uri, path, _ = tiny
    html = path.read_text()
    assert '<section id="claims">' in html and 'href="#claims"' in html
    shown = dict(re.findall(r'<div class="claim" id="claim-(\w+)" data-verdict="(\w+)"', html))
    assert list(shown) == CLAIMED  # read back from the study.yaml artifact, in file order
    assert set(shown.values()) <= {"supported", "not_supported", "inconclusive"}
    # the verdicts on the page are what the checks compute from the store, rule text included
    again = generate_report(uri, study="tiny_claims", out_dir=path.parent.parent / "again",
                            log_artifact=False, write_verdicts=False)  # fmt: skip
    assert {c.name: c.verdict for c in again.claims} == shown
    for c in again.claims:
        assert c.rule and c.rule.split(":")[0] in html.replace("&#39;", "'")
        assert all(re.search(r"\(n=\d", e.text()) for e in c.evidence)


def test_claims_come_from_the_newest_parents_spec_and_can_be_overridden(tiny) -> None:
    uri, path, d = tiny
    client = open_client(uri, create=False)
    parent = client.search_runs(
        [client.get_experiment_by_name("tiny_claims").experiment_id],
        "tags.`lrstudy.kind` = 'study'",
    )[0]
    assert declared_claims(client, {"run_id": parent.info.run_id}) == CLAIMED
    assert declared_claims(client, None) == []
    none = generate_report(uri, study="tiny_claims", out_dir=d / "none", claims=[],
                           log_artifact=False, write_verdicts=False)  # fmt: skip
    assert none.claims == [] and '<section id="claims">' not in none.html


def test_report_command_checks_the_claims_the_file_declares_now(tiny) -> None:
    # Claims added after the run (they change no key): `lrstudy report STUDY.yaml` checks them.
    import subprocess
    import sys

    uri, _, d = tiny
    later = d / "later.yaml"
    later.write_text(TINY.replace(f"claims: [{', '.join(CLAIMED)}]", "claims: [too_high_unstable]"))
    out = d / "later_reports"
    done = subprocess.run(
        [sys.executable, "-m", "lrstudy", "report", str(later), "--tracking-uri", uri, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    html = (out / "tiny_claims" / "index.html").read_text()
    shown = re.findall(r'<div class="claim" id="claim-(\w+)"', html)
    assert shown == ["too_high_unstable"]


def test_the_index_links_every_report_and_shows_each_verdict(tiny, tmp_path: Path) -> None:
    uri, _, _ = tiny
    other = f"sqlite:///{tmp_path}/other.db"  # a second store: the index spans stores
    write_study(other, SyntheticStudy(study="no_claims"), tmp_path / "artifacts")
    result = build_catalogue([(uri, "tiny_claims"), (other, "no_claims")], tmp_path / "reports")
    assert result.path == tmp_path / "reports" / "index.html"
    page = Links()
    page.feed(result.html)
    for study in ("tiny_claims", "no_claims"):
        href = f"{study}/index.html"
        assert href in page.hrefs and (tmp_path / "reports" / href).is_file()
    assert len(page.srcs) == 2 and all((tmp_path / "reports" / s).is_file() for s in page.srcs)
    tiny_entry = result.studies[0]
    assert [c.name for c in tiny_entry.claims] == CLAIMED
    for c in tiny_entry.claims:  # every claim: its statement, its verdict, a link into the report
        row = re.search(rf'<tr data-claim="{c.name}">(.*?)</tr>', result.html, re.S).group(1)
        assert c.verdict_text in row and f"tiny_claims/index.html#claim-{c.name}" in row
    assert "No claims declared." in page.text
    table = markdown_table(result.studies)
    assert table.count("\n") == 1 + len(CLAIMED) and "`tiny_claims`" in table


def test_claims_field_errors_are_one_line() -> None:
    base = "name: x\ntask: {dataset: mnist1d, model: mlp}\ntrain: {epochs: 1, batch_size: 10}\noptimizers: [{name: sgd, lr: 0.1}]\n"  # fmt: skip
    with pytest.raises(UserInputError) as err:
        parse_spec(base + "claims: [too_low_slow, too_slow]", source="s.yaml")
    msg = str(err.value)
    assert msg.startswith("s.yaml: claims[1]: 'too_slow' is not allowed: unknown claim; allowed: ")
    assert "range_test_near_grid_best" in msg and "\n" not in msg
    with pytest.raises(UserInputError, match=r"^s.yaml: claims: 'too_low_slow' is not allowed: listed twice$"):  # fmt: skip
        parse_spec(base + "claims: [too_low_slow, too_low_slow]", source="s.yaml")


def test_declaring_claims_changes_no_key_and_no_spec_hash() -> None:
    spec = load_spec(ROOT / "studies" / "smoke.yaml")
    claimed = spec.model_copy(update={"claims": ("too_low_slow",)})
    assert claimed.spec_hash() == spec.spec_hash()
    assert [t.key for t in plan_trials(claimed)] == [t.key for t in plan_trials(spec)]
    assert "too_low_slow" in claimed.resolved_yaml()  # what the report reads back


def test_the_catalogue_declares_every_registered_claim() -> None:
    files = sorted((ROOT / "studies" / "catalogue").glob("*.yaml"))
    declared = [c for f in files for c in load_spec(f).claims]
    lr_free = [c.name for c in LR_FREE_CLAIMS]
    once = [c for c in declared if c not in lr_free]
    assert sorted(once) == sorted(set(claim_names()) - set(lr_free))  # each in exactly one study
    # The LR-free claims are measured on at least 3 tasks (data set x model) each (issue 16).
    for claim in lr_free:
        tasks = {
            (str(s.task.dataset), str(s.task.model))
            for s in map(load_spec, files)
            if claim in s.claims
        }
        assert len(tasks) >= 3, (claim, tasks)
    names = [load_spec(f).name for f in files]
    assert len(set(names)) == len(names)


def test_the_paper_studies_load() -> None:
    files = sorted((ROOT / "studies" / "mnist1d_paper").glob("*.yaml"))
    models = {load_spec(f).task.model for f in files}
    assert models == {"logistic", "mlp", "cnn", "gru"}
    for f in files:
        spec = load_spec(f)
        assert spec.optimizers[0].name == "adam" and spec.train.batch_size == 100
        assert spec.train.epochs * 4000 // 100 == 6000  # the paper's 6000 steps on 4000 samples


def test_every_claim_gives_a_verdict_on_any_study(tmp_path: Path) -> None:
    # Claims a study was not built for (no batch sweep, no layer-wise LRs, ...) must come out
    # inconclusive with a reason, never break the report.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = SyntheticStudy(study="any", sweep={"momentum": (0.0, 0.9)}, noise_sigmas=(0.1,),
                          range_test=True)  # fmt: skip
    write_study(uri, spec, tmp_path / "artifacts")
    result = generate_report(uri, study="any", out_dir=tmp_path / "reports", claims=claim_names(),
                             log_artifact=False, write_verdicts=False)  # fmt: skip
    assert [c.name for c in result.claims] == claim_names()
    for c in result.claims:
        assert c.verdict in ("supported", "not_supported", "inconclusive") and c.reason
    assert result.html.count('<div class="claim" id="claim-') == len(claim_names())
