"""Load a rendered report in headless Chromium: no console errors, every figure present and drawn."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from lrstudy.report.build import generate_report
from tests.report_fixtures import SyntheticStudy, write_study

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="`chromium` is not on PATH (Debian: apt-get install -y chromium)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]  # fmt: skip


class Figures(HTMLParser):
    """Collects, per <figure data-figure=...>, its svg paths and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.current: str | None = None
        self.depth = 0
        self.root_attrs: dict = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.root_attrs = a
        if tag == "figure" and "data-figure" in a:
            self.current, self.depth = a["data-figure"], 0
            self.figures[self.current] = {"paths": 0, "svg": 0, "img": []}
        elif self.current is not None:
            f = self.figures[self.current]
            f["svg"] += tag == "svg"
            f["paths"] += tag == "path" and len(a.get("d", "")) > 20
            if tag == "img":
                f["img"].append(a.get("src", ""))
        if tag == "figure":
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "figure" and self.current is not None:
            self.depth -= 1
            if self.depth == 0:
                self.current = None


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{root}/mlflow.db"
    spec = SyntheticStudy(study="browser", optimizers=("adam",), lrs={"adam": (1e-4, 3e-3, 0.1)},
                          epochs=3, steps_per_epoch=20, sweep={"train_fraction": (0.5, 1.0)},
                          noise_sigmas=(0.1,), range_test=True)  # fmt: skip
    write_study(uri, spec, root / "artifacts")
    result = generate_report(uri, study="browser", out_dir=root / "reports", log_artifact=False)
    return result, root


def test_chromium_loads_the_page_without_errors_and_draws_every_figure(page):
    result, root = page
    proc = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={root / 'chrome'}",
            "--dump-dom",
            result.path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium logs every console message (any level) and uncaught exceptions as ":CONSOLE"; the
    # page itself never logs, so any such line is a failure.
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert console == []
    dom = Figures()
    dom.feed(proc.stdout)
    assert dom.root_attrs.get("data-scripts-ok") == "1"  # the inline script ran to its end
    # train fraction swept here (learning curves); the weight-decay heatmap is in test_report.py
    expected = {"lr-sensitivity", "convergence", "stability", "outcomes", "schedules", "grad-norm",
                "learning-curves", "robustness"}  # fmt: skip
    assert set(dom.figures) == expected
    for name, f in dom.figures.items():
        drawn = (f["svg"] == 1 and f["paths"] >= 5) or any(
            s.startswith("data:image/png;base64,") and len(s) > 1000 for s in f["img"]
        )
        assert drawn, (name, f)
