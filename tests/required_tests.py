"""Tests that must RUN under CI: their skip is a failure there, with one line saying what was missing.

The hardest tests need services a bare machine may lack (PostgreSQL + `mlflow server`, Ray, pid/net/
UTS namespaces, Chromium) and skip without them, which is right on a laptop and wrong in CI: a green
run must mean they ran. With `LRSTUDY_REQUIRE_ALL=1` (`.ci/run` sets it when `CI=true`; `CI=true`
alone does as well, `LRSTUDY_REQUIRE_ALL=0` turns it off) a skipped test marked
`@pytest.mark.required`, or listed in `REQUIRED` below, is reported as an error instead.

`REQUIRED` names tests in files that carry no marker themselves; an entry that names a test no
longer there is an error as soon as its file is collected, so a rename cannot drop a requirement.
Loaded by tests/conftest.py (its hooks are imported there).
"""

from __future__ import annotations

import os

import pytest

ENV = "LRSTUDY_REQUIRE_ALL"
EVERY = "*"
# file -> test names (without parameters) that must run, or EVERY test of the file.
REQUIRED: dict[str, tuple[str, ...] | str] = {
    "tests/test_server.py": EVERY,  # private PostgreSQL + mlflow server
    "tests/test_bulk_metrics.py": EVERY,  # the same writes on sqlite and PostgreSQL
    "tests/test_ray.py": EVERY,  # Ray in a loopback-only network + pid namespace
    "tests/test_ray_own_model.py": EVERY,
    "tests/test_report_browser.py": EVERY,  # headless Chromium
    "tests/test_store_outages.py": EVERY,  # mlflow server outage; PostgreSQL restart
    "tests/test_population_claims.py": EVERY,  # 64 members through an mlflow server
    "tests/test_execution.py": (
        "test_dead_worker_on_another_machine_is_taken_over_after_its_lease",
    ),
}


def require_all() -> bool:
    flag = os.environ.get(ENV)
    if flag is not None:
        return flag not in ("", "0", "false")
    return os.environ.get("CI", "").lower() == "true"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"required: must run under CI ({ENV}=1 or CI=true): a skip is reported as an error",
    )


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect anything: every collected test is seen
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: dict[str, set[str]] = {}
    for item in items:
        listed = REQUIRED.get(_file(item))
        name = getattr(item, "originalname", item.name)
        seen.setdefault(_file(item), set()).add(name)
        if listed == EVERY or (listed and name in listed):
            item.add_marker(pytest.mark.required)
    for path, listed in REQUIRED.items():
        if listed != EVERY and path in seen and (gone := set(listed) - seen[path]):
            if any(f"{path}::" in arg for arg in config.args):
                continue  # `pytest file::one_test` collects a part of the file
            raise pytest.UsageError(
                f"tests/required_tests.py: REQUIRED names {sorted(gone)} in {path}, not there"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    required = item.get_closest_marker("required") is not None
    if rep.skipped and not hasattr(rep, "wasxfail") and required and require_all():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"required test did not run ({ENV}=1): {reason.removeprefix('Skipped: ')}"
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    # A whole file skipped at import (pytest.importorskip at module level) is a skip too.
    rep = yield
    path = collector.nodeid.split("::", 1)[0]
    module = isinstance(collector, pytest.Module)
    if rep.skipped and module and path in REQUIRED and require_all():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"required tests did not run ({ENV}=1): {reason.removeprefix('Skipped: ')}"
    return rep
