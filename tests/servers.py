"""Real services for tests and benches: a private PostgreSQL cluster and `mlflow server`.

Everything binds 127.0.0.1 on a free port, lives in a temp folder, and is stopped by pid (its own
process group), never by name. PostgreSQL refuses to run as root, so the cluster belongs to the
`postgres` user (Debian's package creates it); tests skip with `why_no_postgres()`'s reason where
that is impossible, CI installs it (.ci/install-services).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_USER = "postgres"


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """Where initdb and postgres live (Debian: /usr/lib/postgresql/<ver>/bin), or None."""
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("postgres").exists():
        return Path(found).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists() and Path(d, "postgres").exists():
            return Path(d)
    return None


def why_no_postgres() -> str | None:
    """None when a private PostgreSQL cluster can be started here, else why not."""
    if os.geteuid() != 0:
        return "needs root (the cluster runs as the postgres user)"
    if pg_bindir() is None:
        return "PostgreSQL binaries not installed (run .ci/install-services)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user (install Debian's postgresql package)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 not installed (pip install 'lrstudy[postgres]')"
    return None


def _stop_group(proc: subprocess.Popen, sig: int, grace_s: float) -> None:
    """Signal `proc`'s process group, wait `grace_s`, then SIGKILL the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their leader
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


class Postgres:
    """A private PostgreSQL cluster owned by `postgres`, listening on 127.0.0.1:`port`.

    `durable=False` (tests) turns fsync off; benches keep PostgreSQL's defaults.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lrstudy-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        pw = pwd.getpwnam(PG_USER)
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        os.chown(self.root, self._uid, self._gid)

    def _as_postgres(self, args: list[str], **kw) -> subprocess.Popen:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        return subprocess.Popen(
            args,
            user=self._uid,
            group=self._gid,
            extra_groups=[],
            cwd=self.root,
            env=env,
            **kw,
        )

    def start(self, timeout: float = 60.0) -> Postgres:
        init = self._as_postgres(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust"]
            + ["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = init.communicate(timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        with open(self.log, "ab") as log:
            os.chown(self.log, self._uid, self._gid)
            self.proc = self._as_postgres(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready in {timeout} s: {self.log_tail()}"
                    ) from None
                time.sleep(0.2)

    def dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={db}"

    def uri(self, db: str) -> str:
        """SQLAlchemy URI for MLflow (psycopg2: SQLAlchemy 2.1's plain postgresql:// wants psycopg 3)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg2

        con = psycopg2.connect(self.dsn("postgres"))
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.uri(name)

    def query(self, db: str, sql: str) -> list[tuple]:
        import psycopg2

        con = psycopg2.connect(self.dsn(db), connect_timeout=5)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            con.close()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGINT, grace_s=15)  # SIGINT: fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` over `backend_uri`, artifacts proxied into `root`.

    One uvicorn worker by default: with 2 or more (mlflow's default is 4) every request took
    ~45 ms longer on this machine, /health included (bench/bench_backends.py).
    """

    def __init__(
        self, backend_uri: str, root: Path, *, port: int | None = None, workers: int = 1
    ) -> None:
        self.backend_uri = backend_uri
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.workers = workers
        self.log = self.root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> MlflowServer:
        args = [sys.executable, "-m", "mlflow", "server"]
        args += ["--backend-store-uri", self.backend_uri, "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", str(self.workers)]
        args += ["--artifacts-destination", str(self.root / "artifacts")]
        env = {
            **os.environ,
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore",
            # GenAI job runners (seven huey consumer processes): nothing a study uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({self.proc.returncode}): {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server not ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.3)

    def kill(self) -> None:
        """A crash: SIGKILL the server's whole process group at once."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGKILL, grace_s=0)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGTERM, grace_s=10)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = False) -> Iterator[Postgres]:
    pg = Postgres(durable=durable)
    try:
        yield pg.start()
    finally:
        pg.stop()


@contextlib.contextmanager
def mlflow_server(backend_uri: str, root: Path, **kw) -> Iterator[MlflowServer]:
    server = MlflowServer(backend_uri, root, **kw)
    try:
        yield server.start()
    finally:
        server.stop()
