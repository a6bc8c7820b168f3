"""A local `mlflow ui` for `lrstudy ui`: its command line and environment, its output without
MLflow's notices, and a browser opened once it answers (on a desktop only). Apart from the links
and the saved view (`ui_view`), which are pure and also serve a tracking server's own UI.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Mapping


def display_available(env: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether opening a browser makes sense: a desktop session, not CI, not over plain SSH."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get("CI") or env.get("LRSTUDY_NO_BROWSER"):
        return False
    if platform == "darwin":
        return not (env.get("SSH_CONNECTION") or env.get("SSH_TTY"))
    if platform.startswith("win"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (then `mlflow ui` there would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def open_when_ready(url: str, health_url: str, *, timeout_s: float = 60.0) -> threading.Thread:
    """Open `url` in the desktop browser once `health_url` answers (in a daemon thread)."""

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    resp.read(16)
                webbrowser.open(url)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)

    thread = threading.Thread(target=wait_then_open, name="lrstudy-open-ui", daemon=True)
    thread.start()
    return thread


# ---- a quiet `mlflow ui` ------------------------------------------------------------------------
# `mlflow ui` (MLflow 3.17, uvicorn, 4 workers) prints a page around the one URL a user needs: a
# StarletteDeprecationWarning per worker (a UserWarning, about MLflow's own import), uvicorn's INFO
# lines (start, each request, shutdown), MLflow's INFO lines and two notices. What is left is
# what went wrong (warnings and errors of uvicorn and MLflow, tracebacks).
_STARLETTE_WSGI = "ignore:starlette.middleware.wsgi is deprecated"
_NOTICES = (
    "[MLflow] Security middleware enabled with default settings",  # localhost-only, as we bind
    "Registry store URI not provided",
)


def mlflow_ui_command(
    uri: str, port: int, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The `mlflow ui` command line for `uri` on 127.0.0.1:`port`, and its environment (from
    `environ`; a user's own MLFLOW_LOGGING_LEVEL and warning filters are kept)."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--registry-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--uvicorn-opts", "--log-level warning --no-access-log"]
    env = {**environ, "MLFLOW_TRACKING_URI": uri}
    env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warns = env.get("PYTHONWARNINGS")
    env["PYTHONWARNINGS"] = f"{warns},{_STARLETTE_WSGI}" if warns else _STARLETTE_WSGI
    return cmd, env


def relay_quietly(stream, out=None) -> threading.Thread:
    """Copy `stream`'s lines (a child's stderr) to `out` (stderr), less MLflow's two notices."""
    out = out if out is not None else sys.stderr

    def relay() -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            if not line.startswith(_NOTICES):
                out.write(line)
                out.flush()
        stream.close()

    thread = threading.Thread(target=relay, name="lrstudy-ui-relay", daemon=True)
    thread.start()
    return thread
