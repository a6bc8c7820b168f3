"""The report stage against a real sqlite MLflow store holding a synthetic study."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.errors import UserInputError
from lrstudy.report.build import build_report, generate_report
from lrstudy.report.diagnose import VERDICTS
from lrstudy.report.history import _client_points, clean_history, read_histories
from lrstudy.report.read import find_study
from tests.report_fixtures import SyntheticStudy, write_study

ROOT = Path(__file__).resolve().parents[1]
# A hostile study name: every page that shows it must show it as text.
STUDY = "demo <script>alert(1)</script>"
SPEC = SyntheticStudy(
    study=STUDY,
    experiment="demo",
    lrs={"adam": (1e-4, 3e-3, 0.1), "sgd": (1e-3, 0.1, 0.3, 3.0)},
    epochs=3,
    steps_per_epoch=20,
    sweep={"weight_decay": (0.0, 1e-4)},
    noise_sigmas=(0.1, 0.3),
    range_test=True,
)
ALL_FIGURES = {"lr-sensitivity", "convergence", "stability", "outcomes", "schedules", "grad-norm",
               "axis-weight_decay", "robustness"}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    written = write_study(uri, SPEC, root / "artifacts")
    return uri, written, root


@pytest.fixture(scope="module")
def report(store):
    uri, _, root = store
    return generate_report(uri, study=STUDY, out_dir=root / "reports")


def figures(html: str) -> dict[str, str]:
    return dict(
        re.findall(
            r'<figure class="fig" id="fig-[^"]*" data-figure="([^"]+)"(.*?)</figure>', html, re.S
        )
    )


def test_report_is_one_self_contained_file(report):
    assert report.path.name == "index.html"
    assert report.path.parent.name == "demo_script_alert_1_script"  # one safe path component
    html = report.path.read_text(encoding="utf-8")
    assert html == report.html
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html, re.I)
    assert "<link" not in html and not re.search(r"<script[^>]*\ssrc=", html)
    assert "<img" not in html or 'src="data:image/png;base64,' in html
    assert len(html) < 3_000_000


def test_every_section_has_its_figure(report):
    figs = figures(report.html)
    assert set(figs) == ALL_FIGURES
    for name, body in figs.items():
        assert ("<svg" in body and "<path" in body) or "data:image/png;base64," in body, name
    assert report.n_points_plotted > 0 and report.n_points_read > 0


def test_header_tables_and_honest_counts(report):
    html = report.html
    for text in ("mnist1d", "Best configuration", "(n=2)", "How verdicts are decided", "never",
                 "1 run(s) left out: status KILLED", "2 invocations of this study",
                 "LR range test suggestions", 'class="sortable"'):  # fmt: skip
        assert text in html, text
    # the class count (labels are checked to be 0..C-1 when loaded) and the split sizes
    assert "mnist1d (10 classes; " in html and " validation samples)" in html
    # every configuration is listed, the diverged ones too
    n_configs = sum(len(v) for v in SPEC.lrs.values()) * len(SPEC.sweep["weight_decay"])
    assert html.count('<tr><td class="name" data-v=') == n_configs  # the final-performance table
    assert html.count(">diverged</span>") >= 4  # adam 0.1 and sgd 3.0, both weight decays


def test_fresh_process_renders_the_same_bytes_without_importing_torch(store, report, tmp_path):
    """Determinism (same store -> same page but the timestamp line), checked across processes,
    and the report path never imports torch or lightning."""
    uri, _, _ = store
    code = (
        "import sys\n"
        "from lrstudy.report.build import build_report\n"
        f"build_report({uri!r}, study={STUDY!r}, out_dir=r'{tmp_path}', log_artifact=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'lightning' not in sys.modules, 'lightning was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    again = (tmp_path / report.path.parent.name / "index.html").read_text(encoding="utf-8")

    def strip(h: str) -> list[str]:
        return [line for line in h.splitlines() if 'class="generated"' not in line]

    assert strip(again) == strip(report.html)
    assert sum('class="generated"' in line for line in report.html.splitlines()) == 1


def test_verdicts_are_tagged_on_the_trial_runs(store, report):
    uri, written, _ = store
    client = MlflowClient(uri)
    tags = {
        rid: client.get_run(rid).data.tags.get(N.TAG_DIAGNOSIS) for rid in written.trial_run_ids
    }
    assert set(tags.values()) <= set(VERDICTS) and None not in tags.values()
    for rid in written.trial_run_ids:
        run = client.get_run(rid)
        if run.data.tags[N.TAG_OUTCOME] == N.OUTCOME_DIVERGED:
            assert tags[rid] == "diverged"
    assert client.get_run(written.ignored_run_ids[0]).data.tags.get(N.TAG_DIAGNOSIS) is None


def test_report_artifact_sits_on_the_newest_parent_run(store, report):
    uri, written, _ = store
    client = MlflowClient(uri)
    old, new = written.parent_run_ids
    assert [a.path for a in client.list_artifacts(new, "report")] == [N.REPORT_ARTIFACT]
    assert client.list_artifacts(old, "report") == []
    local = client.download_artifacts(new, N.REPORT_ARTIFACT)
    assert Path(local).read_text(encoding="utf-8") == report.html


def test_parent_run_id_and_experiment_select_the_same_study(store, tmp_path):
    uri, written, _ = store
    by_run = find_study(MlflowClient(uri), parent_run_id=written.parent_run_ids[0])
    by_exp = find_study(MlflowClient(uri), experiment="demo")
    assert by_run.study == by_exp.study == STUDY
    assert sorted(by_run.runs["run_id"]) == sorted(written.trial_run_ids)


def test_histories_are_deduplicated_and_strided(store):
    uri, written, _ = store
    client = MlflowClient(uri)
    first = written.trial_run_ids[0]  # logged steps 10..19 twice (a resumed run)
    full, n_full = read_histories(client, {"all": ([first], 1)}, [N.TRAIN_LOSS], [])
    assert full["step"].is_unique and len(full) == 60 and n_full == 70
    resumed = client.get_metric_history(first, N.TRAIN_LOSS)
    latest = {m.step: m.value for m in sorted(resumed, key=lambda m: m.timestamp)}
    assert full.set_index("step")["value"].to_dict() == pytest.approx(latest)
    # the slow public path (stores without a bulk path) reads the same curve
    slow = clean_history(_client_points(client, [first], [N.TRAIN_LOSS]))
    assert slow.equals(full)
    strided, _ = read_histories(client, {"all": ([first], 4)}, [N.TRAIN_LOSS], [N.VAL_ACC])
    loss = strided[strided["key"] == N.TRAIN_LOSS]
    assert (loss["step"] % 4 == 0).all() and len(loss) == 15
    assert len(strided[strided["key"] == N.VAL_ACC]) == SPEC.epochs  # epoch keys never strided


def test_hostile_study_name_renders_as_text(report):
    assert "<script>alert(1)</script>" not in report.html
    assert report.html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # title and heading
    assert report.html.count("<script") == 1  # the page's own sorting script, nothing else


def test_plugin_runs_of_an_experiment_render(store, tmp_path):
    uri, _, _ = store
    client = MlflowClient(uri)
    exp = client.create_experiment("mine", artifact_location=(tmp_path / "a").as_uri())
    for i, (opt, lr) in enumerate([("adamw", "0.001"), ("adamw", "0.01"), (None, None)]):
        run = client.create_run(exp, run_name=f"my run {i}", tags={N.TAG_KIND: N.KIND_PLUGIN})
        params = [Param("optimizer", opt), Param("lr", lr)] if opt else []
        ms = [
            Metric(k, v, 0, s)
            for s in range(50)
            for k, v in ((N.LR, 0.01), (N.TRAIN_LOSS, 2.0 / (1 + s * (i + 1))), (N.GRAD_NORM, 1.0))
        ]
        ms += [Metric(N.VAL_ACC, 0.5 + 0.1 * e + 0.05 * i, 0, e * 10 + 9) for e in range(5)]  # fmt: skip
        client.log_batch(run.info.run_id, metrics=ms, params=params, tags=[RunTag("x", "y")])
        client.set_terminated(run.info.run_id)
    result = generate_report(uri, experiment="mine", out_dir=tmp_path / "r", log_artifact=False)
    figs = figures(result.html)
    assert {"lr-sensitivity", "convergence", "grad-norm", "stability"} <= set(figs)
    assert "my run 2" in result.html  # a run without params is its own configuration
    assert "grouped by their `optimizer` and `lr` params" in result.html


def test_user_errors_are_one_line(store, tmp_path):
    uri, _, _ = store
    cases = [
        dict(experiment="no such experiment"),
        dict(study="no such study"),
        dict(parent_run_id="0123456789abcdef0123456789abcdef"),
        dict(),
    ]
    for kwargs in cases:
        with pytest.raises(UserInputError) as err:
            build_report(uri, out_dir=tmp_path, **kwargs)
        assert "\n" not in str(err.value)
    client = MlflowClient(uri)
    exp = client.create_experiment("empty study", artifact_location=(tmp_path / "a").as_uri())
    client.create_run(exp, tags={N.TAG_KIND: N.KIND_STUDY, N.TAG_STUDY: "empty study"})
    with pytest.raises(UserInputError, match="no finished trial runs"):
        build_report(uri, study="empty study", out_dir=tmp_path)


def test_store_is_shown_without_credentials():
    from lrstudy.report.header import _safe_uri

    assert _safe_uri("sqlite:////tmp/a/mlflow.db") == "sqlite:////tmp/a/mlflow.db"
    assert _safe_uri("https://user:secret@host:5000/x") == "https://host:5000/x"
    assert _safe_uri("https://host/?token=secret") == "https://host/"


def test_a_mistyped_option_is_refused_not_ignored(store, tmp_path):
    uri, _, _ = store
    with pytest.raises(TypeError, match="out_dri"):
        build_report(uri, study=STUDY, out_dri=tmp_path)  # type: ignore[call-arg]
