"""The CI scripts: `.ci/install-services` under CI fails (one line) when it cannot install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAN_HIDE = os.geteuid() == 0 and all(map(shutil.which, ("unshare", "mount")))
# What the script runs before it installs anything; sudo is left out on purpose.
TOOLS = ("bash", "dirname", "ls", "getent", "ip", "unshare")


@pytest.mark.required
@pytest.mark.skipif(
    not CAN_HIDE, reason="needs root and unshare (a bare machine in a mount namespace)"
)
@pytest.mark.parametrize("ci", ["true", None])
def test_install_services_fails_under_ci_when_it_cannot_install(tmp_path: Path, ci) -> None:
    # A bare machine, as the script sees it: PostgreSQL hidden (a private mount namespace), no
    # sudo on PATH, and `id -u` says a user (the venv may live where other users cannot read).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    hide = "[ ! -d /usr/lib/postgresql ] || mount -t tmpfs none /usr/lib/postgresql"
    script = f'{hide} && PATH="$BARE_PATH" exec "$@"'
    env = {"PATH": os.environ["PATH"], "BARE_PATH": str(bin_dir), "HOME": str(tmp_path)}
    env["PIP_NO_INDEX"] = "1"
    if ci:
        env["CI"] = ci
    cmd = ["unshare", "--mount", "sh", "-c", script, "sh"]
    cmd += ["bash", str(ROOT / ".ci" / "install-services"), str(ROOT / ".venv")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    if ci:
        assert done.returncode == 1, done.stderr
        assert lines == [
            "install-services: cannot install PostgreSQL, iproute2, util-linux under CI: "
            "not root and no sudo"
        ]
    else:  # a laptop: a warning, the tests that need them skip there
        assert lines[0] == (
            "install-services: not root and no sudo: PostgreSQL/Ray tests will be skipped"
        ), done.stderr
