"""Links into MLflow's UI: URLs, the saved study view, `lrstudy ui` (local store and server)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from lrstudy import cli, names
from lrstudy.track import ui_server
from lrstudy.track import ui_view as uv
from tests.conftest import SMOKE

# The UI-state keys MLflow 3.17's saved views carry (bundle: the list next to "selectedColumns").
UI_STATE_KEYS = {
    "selectedColumns", "columnOrder", "columnWidths", "runsExpanded", "runsPinned", "runsHidden",
    "runsVisibilityMap", "runsHiddenMode", "compareRunCharts", "compareRunSections",
    "viewMaximized", "runListHidden", "isAccordionReordered", "groupBy", "groupsExpanded",
    "autoRefreshEnabled", "useGroupedValuesInCharts", "hideEmptyCharts", "globalLineChartConfig",
    "chartsSearchFilter",
}  # fmt: skip


def _query(url: str) -> dict[str, str]:
    fragment = urlsplit(url).fragment
    route, _, query = fragment.partition("?")
    return {"route": route, **{k: v[0] for k, v in parse_qs(query).items()}}


# ---- URLs -------------------------------------------------------------------------------------


def test_runs_view_url_opens_the_training_runs_table_with_the_saved_view():
    url = uv.runs_view_url("http://127.0.0.1:5000/", "7", view_key="lrstudy-smoke-1234abcd")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs"
        "?workflowType=machine_learning&viewStateShareKey=lrstudy-smoke-1234abcd"
    )
    q = _query(url)
    # any search facet in the URL would make the UI ignore the saved view
    assert not set(q) & set(uv.SEARCH_FACETS)


def test_runs_view_url_without_a_view_carries_filter_and_order():
    order = uv.column("metrics", names.FINAL_VAL_ACC)
    url = uv.runs_view_url(
        "https://mlflow.example.org/prefix",
        "3",
        search_filter=uv.trials_filter("s"),
        order_by=order,
    )
    assert url.startswith("https://mlflow.example.org/prefix/#/experiments/3/runs?")
    q = _query(url)
    assert q["workflowType"] == "machine_learning"
    assert q["searchFilter"] == "tags.`lrstudy.kind` = 'trial' AND tags.`lrstudy.study` = 's'"
    assert q["orderByKey"] == "metrics.`final/val_acc`"
    assert q["orderByAsc"] == "false"


def test_runs_view_url_refuses_a_view_with_facets_and_an_empty_experiment():
    with pytest.raises(ValueError, match="one or the other"):
        uv.runs_view_url("http://h:1", "1", view_key="k", search_filter="x")
    with pytest.raises(ValueError, match="empty"):
        uv.runs_view_url("http://h:1", " ")


def test_base_url_and_experiments_url():
    assert uv.base_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert uv.base_url(" https://host/mlflow/?x=1#/frag ") == "https://host/mlflow"
    for bad in ("sqlite:///mlflow.db", "databricks", "127.0.0.1:5000"):
        with pytest.raises(ValueError):
            uv.base_url(bad)
    assert uv.is_server_uri("HTTP://h:1") and not uv.is_server_uri("sqlite:///x.db")
    assert (
        uv.experiments_url("http://h:1/")
        == "http://h:1/#/experiments?workflowType=machine_learning"
    )


def test_trials_filter_quotes_the_study_name():
    kind = "tags.`lrstudy.kind` = 'trial'"
    assert uv.trials_filter() == kind
    assert uv.trials_filter("it's") == f'{kind} AND tags.`lrstudy.study` = "it\'s"'
    assert uv.trials_filter("""a'b"c""") == kind  # not expressible: all trials of the experiment


# ---- the saved view ---------------------------------------------------------------------------


def test_view_key_is_stable_safe_and_distinct():
    assert uv.view_key("smoke") == uv.view_key("smoke")
    assert uv.view_key(None) == "lrstudy-trials"
    keys = {uv.view_key(s) for s in ("a b", "a-b", "A B", "ümlaut", "x" * 300, "")}
    assert len(keys) == 6
    for k in keys:
        assert re.fullmatch(r"[a-z0-9-]{1,64}", k), k


def test_study_view_state_shows_outcome_and_result_first():
    state = uv.study_view_state("smoke", run_names=["sgd lr=0.05 cosine+warmup seed=1"])
    assert set(state) <= set(uv.SEARCH_FACETS) | UI_STATE_KEYS
    outcome = f"tags.`{names.TAG_OUTCOME}`"
    acc = f"metrics.`{names.FINAL_VAL_ACC}`"
    assert state["selectedColumns"][:2] == [outcome, acc]
    assert f"params.`{'lr'}`" in state["selectedColumns"]
    assert state["columnOrder"][:3] == ["attributes.`Run Name`", "runDateAndNestInfo", outcome]
    assert set(state["columnWidths"]) <= set(state["columnOrder"])
    assert state["orderByKey"] == acc and state["orderByAsc"] is False
    assert state["searchFilter"] == uv.trials_filter("smoke")
    json.dumps(state)  # JSON all the way down


def test_name_column_width_fits_the_longest_name_within_bounds():
    assert uv.name_column_width([]) == uv.NAME_WIDTH_DEFAULT
    assert uv.name_column_width(["sgd 0.1 cos s0"]) == uv.NAME_WIDTH_MIN
    assert uv.name_column_width(["x" * 500]) == uv.NAME_WIDTH_MAX
    # measured in Chromium: a 34-character name needs ~250 px with the colour dot
    assert uv.name_column_width(["adam lr=0.001 cosine+warmup seed=1"]) >= 250


def test_envelope_round_trip_and_limits():
    state = uv.study_view_state("s")
    value = uv.view_envelope("lrstudy: s trials", state, created_ms=1, updated_ms=2)
    env = json.loads(value)
    assert env["name"] == "lrstudy: s trials" and env["createdAt"] == 1 and env["updatedAt"] == 2
    assert isinstance(env["state"], str)  # the UI requires the state as JSON text
    assert uv.parse_envelope(value)["state"] == state
    for junk in ("", "{", "[]", '{"name": "x", "createdAt": 1, "state": "[1]"}', "null"):
        assert uv.parse_envelope(junk) is None
    with pytest.raises(ValueError, match="20000"):
        uv.view_envelope("big", {"searchFilter": "x" * 30_000}, created_ms=1, updated_ms=1)


def test_ensure_study_view_writes_once_and_refreshes_keeping_created_at(store_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    exp = client.create_experiment("e")
    key = uv.ensure_study_view(client, exp, "smoke", ["a b c"])
    tag = uv.SHARED_VIEW_TAG_PREFIX + key
    first = uv.parse_envelope(client.get_experiment(exp).tags[tag])
    assert first["name"] == "lrstudy: smoke trials"
    assert first["state"] == uv.study_view_state("smoke", run_names=["a b c"])

    assert uv.ensure_study_view(client, exp, "smoke", ["a b c"]) == key
    assert client.get_experiment(exp).tags[tag] == uv.view_envelope(
        first["name"], first["state"], created_ms=first["createdAt"], updated_ms=first["updatedAt"]
    )  # unchanged: not rewritten

    time.sleep(0.01)
    uv.ensure_study_view(client, exp, "smoke", ["a much longer run name than before, seed=1"])
    second = uv.parse_envelope(client.get_experiment(exp).tags[tag])
    assert second["createdAt"] == first["createdAt"] and second["updatedAt"] > first["updatedAt"]
    assert second["state"]["columnWidths"]["attributes.`Run Name`"] > 190


# ---- names and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kw", "expected"),
    [
        (("sgd", 0.05, "cosine", 1), {"warmup": True}, "sgd 0.05 cos+w s1"),
        (("adam", 3e-4, "constant", 0), {"swept": {"batch_size": 64}}, "adam 0.0003 const bs64 s0"),
        (("adamw", 1e-5, "one_cycle", 2), {"swept": {"weight_decay": 0.01}}, "adamw 1e-5 1cyc wd0.01 s2"),
        (("sgd", None, "step", 0), {"lr_auto": True}, "sgd auto step s0"),
        (("lion", 12345.0, "mystery", 3), {}, "lion 1.23e4 mystery s3"),
    ],
)  # fmt: skip
def test_compact_trial_name(args, kw, expected):
    assert uv.compact_trial_name(*args, **kw) == expected


def test_float32_short():
    assert uv.float32_short(0.20000000298023224) == 0.2
    assert uv.float32_short(0.18333333730697632) == 0.18333334
    assert uv.float32_short(0.125) == 0.125
    assert math.isnan(uv.float32_short(float("nan")))
    assert uv.float32_short(float("inf")) == float("inf")
    assert uv.float32_short(1e300) == 1e300  # beyond float32: unchanged
    import struct

    for v in (1 / 3, 2.302585092994046, 1.7973986e18, 6.1e-8, -0.75):
        short = uv.float32_short(v)
        assert struct.pack("f", short) == struct.pack("f", v)
        assert len(repr(short)) <= len(repr(v))


@pytest.mark.parametrize(
    ("env", "platform", "expected"),
    [
        ({}, "linux", False),
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({"DISPLAY": ":0", "CI": "true"}, "linux", False),
        ({"DISPLAY": ":0", "LRSTUDY_NO_BROWSER": "1"}, "linux", False),
        ({}, "darwin", True),
        ({"SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22"}, "darwin", False),
        ({}, "win32", True),
        ({"CI": "1"}, "win32", False),
    ],
)
def test_display_available(env, platform, expected):
    assert ui_server.display_available(env, platform) is expected


# ---- `lrstudy ui` -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trial(client, exp: str, name: str, outcome: str, acc: float, study: str = "smoke") -> str:
    run = client.create_run(
        exp,
        run_name=name,
        tags={names.TAG_KIND: names.KIND_TRIAL, names.TAG_STUDY: study, names.TAG_OUTCOME: outcome},
    )
    rid = run.info.run_id
    client.log_param(rid, "optimizer", name.split()[0])
    client.log_metric(rid, names.FINAL_VAL_ACC, acc)
    client.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture
def smoke_store(store_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    exp = client.create_experiment("smoke")
    _trial(client, exp, "sgd lr=0.05 cosine+warmup seed=0", names.OUTCOME_OK, 0.2)
    _trial(client, exp, "sgd lr=50 constant seed=0", names.OUTCOME_DIVERGED, 0.05)
    return client, exp


class FakePopen:
    calls: list = []

    def __init__(self, cmd, env=None, interrupt=False, **pipes):
        self.cmd, self.env, self.interrupt, self.terminated = cmd, env, interrupt, False
        self.stdout = io.BytesIO(b"")  # the child's output, relayed (less its noise)
        FakePopen.calls.append(self)

    def wait(self, timeout=None):
        if self.interrupt and not self.terminated:
            raise KeyboardInterrupt
        return 0

    def terminate(self):
        self.terminated = True

    def kill(self):
        self.terminated = True


@pytest.fixture
def no_browser(monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(ui_server, "display_available", lambda *a, **k: False)
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url))
    return opened


def test_ui_with_a_server_prints_its_runs_view_and_starts_nothing(
    smoke_store, monkeypatch, capsys, no_browser
):
    client, exp = smoke_store
    monkeypatch.setattr("lrstudy.track.store.open_client", lambda uri, create=True: client)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    monkeypatch.setattr(ui_server, "display_available", lambda *a, **k: True)

    rc = cli.main(["ui", str(SMOKE), "--tracking-uri", "http://tracking.example:5000/"])
    out = capsys.readouterr().out
    assert rc == 0
    key = uv.view_key("smoke")
    url = f"http://tracking.example:5000/#/experiments/{exp}/runs"
    url += f"?workflowType=machine_learning&viewStateShareKey={key}"
    assert url in out and "lrstudy: smoke trials" in out
    assert no_browser == [url]  # a desktop: opened, once
    view = client.get_experiment(exp).tags[uv.SHARED_VIEW_TAG_PREFIX + key]
    width = uv.parse_envelope(view)["state"]["columnWidths"]["attributes.`Run Name`"]
    assert width == uv.name_column_width(["sgd lr=0.05 cosine+warmup seed=0"])


def test_ui_on_a_read_only_server_links_with_filter_and_order(
    smoke_store, monkeypatch, capsys, no_browser
):
    from mlflow.exceptions import MlflowException

    client, exp = smoke_store

    def refuse(*a, **k):
        raise MlflowException("PERMISSION_DENIED")

    monkeypatch.setattr(client, "set_experiment_tag", refuse)
    monkeypatch.setattr("lrstudy.track.store.open_client", lambda uri, create=True: client)
    rc = cli.main(["ui", "--experiment", "smoke", "--tracking-uri", "http://h:5000"])
    out = capsys.readouterr().out
    assert rc == 0 and "could not save the runs view" in out
    url = next(line.strip() for line in out.splitlines() if line.strip().startswith("http"))
    q = _query(url)
    assert q["route"] == f"/experiments/{exp}/runs" and q["workflowType"] == "machine_learning"
    assert q["searchFilter"] == uv.trials_filter(None)
    assert q["orderByKey"] == "metrics.`final/val_acc`"


def test_ui_on_a_local_store_starts_mlflow_ui_on_loopback(
    smoke_store, store_uri, monkeypatch, capsys, no_browser
):
    FakePopen.calls = []
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    port = _free_port()
    rc = cli.main(["ui", str(SMOKE), "--tracking-uri", store_uri, "--port", str(port)])
    out = capsys.readouterr().out
    assert rc == 0
    (proc,) = FakePopen.calls
    cmd = proc.cmd
    assert cmd[1:4] == ["-m", "mlflow", "ui"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == str(port)
    assert cmd[cmd.index("--backend-store-uri") + 1] == store_uri
    _, exp = smoke_store
    assert f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?workflowType=machine_learning" in out
    assert no_browser == []  # no display: nothing opened


def test_ui_without_a_study_lists_experiments_and_ctrl_c_stops_the_ui(
    store_uri, monkeypatch, capsys, no_browser
):
    FakePopen.calls = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, env=None, **k: FakePopen(cmd, env, True))
    port = _free_port()
    rc = cli.main(["ui", "--tracking-uri", store_uri, "--port", str(port)])
    assert rc == 0 and FakePopen.calls[0].terminated
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning" in out


def test_ui_errors_are_one_line(smoke_store, store_uri, tmp_path, capsys):
    assert cli.main(["ui", "--experiment", "nope", "--tracking-uri", store_uri]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path}/none/mlflow.db"
    assert cli.main(["ui", "--experiment", "smoke", "--tracking-uri", missing]) == 2
    assert "does not exist" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["ui", "--tracking-uri", store_uri, "--port", str(port)]) == 2
    assert "in use" in capsys.readouterr().err


# ---- in a real UI -----------------------------------------------------------------------------


def test_a_real_lrstudy_ui_prints_its_url_and_nothing_else(smoke_store, store_uri, tmp_path):
    """`lrstudy ui` on a local store, for real: the URL lines, and none of `mlflow ui`'s page of
    StarletteDeprecationWarnings and uvicorn INFO lines (start, requests, shutdown)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "lrstudy", "ui", str(SMOKE), "--tracking-uri", store_uri]
    cmd += ["--port", str(port), "--no-browser"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # up, and every worker serves (a request per worker, give or take)
            try:
                for _ in range(8):
                    urllib.request.urlopen(base + "/health", timeout=5).read()
                urllib.request.urlopen(base + "/", timeout=10).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "ui did not come up"
                time.sleep(0.5)
    finally:
        proc.terminate()  # lrstudy ends its `mlflow ui` as on Ctrl-C
        out, _ = proc.communicate(timeout=120)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, lines
    _, exp = smoke_store
    assert lines[0] == f"MLflow UI for {store_uri} (Ctrl-C stops it):"
    assert lines[1].startswith(f"  {base}/#/experiments/{exp}/runs?")
    assert lines[2].startswith("  view 'lrstudy: smoke trials' (Views menu)")
    assert lines[3:] == []  # no warnings, no INFO lines


def test_the_ui_relay_keeps_errors_and_drops_only_mlflows_notices() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "wb") as w:
        w.write(
            b"Registry store URI not provided. Using backend store URI.\n"
            b"[MLflow] Security middleware enabled with default settings (localhost-only).\n"
            b"ERROR: [Errno 98] address already in use\n"
            b"Traceback (most recent call last):\n"
        )
    out = io.StringIO()
    ui_server.relay_quietly(os.fdopen(read, "rb"), out).join(timeout=30)
    assert out.getvalue().splitlines() == [
        "ERROR: [Errno 98] address already in use",
        "Traceback (most recent call last):",
    ]


CHROMIUM = shutil.which("chromium")


@pytest.mark.required
@pytest.mark.skipif(CHROMIUM is None, reason="`chromium` is not on PATH")
def test_the_view_renders_in_mlflows_ui(smoke_store, store_uri, tmp_path, capsys):
    """A real `mlflow ui` and headless Chromium: the printed URL shows trials, best first, with
    their outcome and final val acc as columns and whole names."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow ui did not come up")
                time.sleep(1)
        assert cli.main(["ui", str(SMOKE), "--tracking-uri", base, "--no-browser"]) == 0
        url = next(ln.strip() for ln in capsys.readouterr().out.splitlines() if "#/" in ln)
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=20000",
                "--window-size=1600,1000",
                "--dump-dom",
                url,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    assert "Model training" in dom and "Runs" in dom
    for col in ("tags.`lrstudy.outcome`", "metrics.`final/val_acc`", "attributes.`Run Name`"):
        assert f'col-id="{col}"' in dom, col
    ok, diverged = dom.find("sgd lr=0.05 cosine+warmup seed=0"), dom.find("sgd lr=50 constant")
    assert 0 <= ok < diverged  # whole names, best final val acc first
    assert ">diverged<" in dom


def test_a_study_ranked_by_its_own_metric_shows_and_sorts_by_it() -> None:
    # A user's module ranked by val_loss (lower is better): that column replaces final val acc,
    # and the view sorts by it, best (lowest) first.
    from lrstudy.track.ui_view import column, metric_columns, study_view_state

    state = study_view_state("own", **metric_columns(("val_loss", "min")))
    assert state["orderByKey"] == column("metrics", "val_loss") and state["orderByAsc"] is True
    assert column("metrics", "val_loss") in state["selectedColumns"]
    assert column("metrics", "final/val_acc") not in state["selectedColumns"]
    assert metric_columns(("val/acc", "max")) == {} and metric_columns(None) == {}
