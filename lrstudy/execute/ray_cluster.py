"""Finding and checking a Ray cluster before `ray.init`, which would retry a bad address for
minutes: the address is parsed, its port probed, its GCS asked for a key from a child process
that can be given up on, and token authentication sorted out, so every mistake is one line.
Also what a cluster needs from the driver: forwarded environment, and a tracking URI that the
other machines can open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from lrstudy.errors import UserInputError

_PROBE_TIMEOUT_S = 20.0  # a Ray GCS answers in ~1 s; ray.init itself would wait for minutes
_TCP_TIMEOUT_S = 5.0
# Environment the tasks on a cluster need from the driver (lease, patience, cache, MLflow auth).
_FORWARDED_ENV_PREFIXES = ("LRSTUDY_", "MLFLOW_")


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}


def is_local_file(uri: str) -> bool:
    """sqlite, a file store, or a bare path: only this machine can open it."""
    if uri.startswith(("sqlite:", "file:")):
        return True
    return ":" not in uri and not uri.startswith("databricks")


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlflow.db` relative to the driver's folder, made absolute for the workers."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def _split_address(flag: str, address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise UserInputError(f"{flag} {address}: not a Ray address; give HOST:PORT")
    return host, int(port)


def check_cluster(flag: str, address: str) -> None:
    """Fail in seconds when nothing (or not Ray) answers: `ray.init` would retry for minutes."""
    if address == "auto":
        from ray._private import services

        try:
            address = services.canonicalize_bootstrap_address(address) or address
        except Exception as e:  # noqa: BLE001
            raise UserInputError(f"{flag} auto: no Ray cluster found ({first_line(e)})") from None
        if address == "auto":
            return
    host, port = _split_address(flag, address)
    try:
        with socket.create_connection((host, port), timeout=_TCP_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserInputError(f"{flag} {address}: no Ray cluster answers there ({reason})") from None
    if address.startswith("ray://"):
        return  # a Ray Client server, not a GCS: ray.init reports its own errors quickly
    # Ask the GCS for its cluster id from a child process, which can be given up on.
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, f"{host}:{port}"],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            env={**os.environ, "RAY_BACKEND_LOG_LEVEL": "fatal"},
        )
    except subprocess.TimeoutExpired:
        raise UserInputError(
            f"{flag} {address}: no Ray cluster answers there (something listens on port {port} "
            f"but no Ray GCS answered within {_PROBE_TIMEOUT_S:.0f} s)"
        ) from None
    answer = (done.stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    if done.returncode != 0 or answer not in ("ok", "token", "token-refused"):
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"probe exited with {done.returncode}"
        raise UserInputError(f"{flag} {address}: no Ray cluster answers there ({reason})")
    if answer == "token-refused":
        raise UserInputError(
            f"{flag} {address}: the Ray cluster wants token authentication and refused the "
            "token found here; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token"
        )
    if answer == "token":
        # Ray turns token auth on for a cluster started where a token exists (~/.ray/auth_token)
        # but not for a client joining it: do what the probe found to work.
        os.environ["RAY_AUTH_MODE"] = "token"
        with contextlib.suppress(Exception):
            from ray._raylet import Config

            Config.initialize("")


# Run by `check_cluster` in a child process: prints ok, token (answers with this machine's Ray
# auth token only) or token-refused; fails (or hangs, and is given up on) when no GCS answers.
_PROBE = """
import os, sys
import ray._raylet as r

def ask():
    r.GcsClient(address=sys.argv[1]).internal_kv_get(b"lrstudy-probe", None)

def refused(e):
    return "Authentication" in type(e).__name__ + str(e)

try:
    ask()
    print("ok")
except Exception as e:
    if not refused(e) or os.environ.get("RAY_AUTH_MODE"):
        raise
    os.environ["RAY_AUTH_MODE"] = "token"
    r.Config.initialize("")
    try:
        ask()
        print("token")
    except Exception as e2:
        if not refused(e2):
            raise
        print("token-refused")
"""


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
