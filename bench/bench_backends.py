"""What a tracking backend costs a study: local sqlite vs `mlflow server` on sqlite vs on PostgreSQL.

    .venv/bin/python bench/bench_backends.py [--runs 3] [--seeds 3] [--workers 2] [--claims 50]

The same study (studies/smoke.yaml with more seeds: 6 configurations x seeds trials) runs
end to end (`python -m lrstudy run ... --no-report`, wall seconds, start-up included) against each
backend, `--runs` times, interleaved (local, server/sqlite, server/PostgreSQL, local, ...) so that
load from elsewhere on the machine hits every backend alike. Each run is a new study in the same
store (its own name and experiment). Then the claim protocol's own cost per trial: one
`Claims.claim` + `end_run` on each store, `--claims` times.

Servers are started as in tests/servers.py: 127.0.0.1 on free ports, one uvicorn worker each
(`--server-workers`; with 2 or more every request took ~45 ms longer here), PostgreSQL with its
default durability (fsync on), stopped by process group at the end. Needs root and PostgreSQL for the
PostgreSQL leg (.ci/install-services); without them it is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import MlflowServer, postgres_cluster, why_no_postgres  # noqa: E402

SMOKE = ROOT / "studies" / "smoke.yaml"


def study_file(folder: Path, name: str, seeds: int) -> Path:
    text = SMOKE.read_text().replace("name: smoke", f"name: {name}")
    text = text.replace("experiment: smoke", f"experiment: {name}")
    text = text.replace("seeds: [0, 1]", f"seeds: {list(range(seeds))}")
    p = folder / f"{name}.yaml"
    p.write_text(text)
    return p


def run_study(study: Path, uri: str, workers: int, cwd: Path, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri]
    cmd += ["--workers", str(workers), "--no-report"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"study failed on {uri} ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


class _Timed:
    """A client proxy that times each call by method name (what one claim costs is round trips)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.calls: dict[str, list[float]] = defaultdict(list)

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - t0)

        return timed


def claim_costs(uri: str, n: int) -> tuple[list[float], dict[str, list[float]]]:
    """Seconds for one uncontended claim + end of a trial run, `n` times, on store `uri`; and
    the seconds of each client call made meanwhile, by method."""
    from lrstudy import names
    from lrstudy.track import runs as track_runs
    from lrstudy.track.claims import Claims
    from lrstudy.track.leases import Lease
    from lrstudy.track.store import experiment_id, open_client

    client = _Timed(open_client(uri))
    study = f"claims-{os.getpid()}-{time.time_ns()}"
    exp = experiment_id(client, study)
    claims = Claims(client, exp, study, lease=Lease(60.0))
    costs = []
    for i in range(n + 1):  # the first one warms connections and caches up: not counted
        if i == 1:
            client.calls.clear()
        key = f"k{i:04d}"
        tags = {
            names.TAG_KIND: names.KIND_TRIAL,
            names.TAG_STUDY: study,
            names.TAG_TRIAL_KEY: key,
            names.TAG_OUTCOME: names.OUTCOME_RUNNING,
        }
        t0 = time.perf_counter()
        # MLflow prints two "View run" lines per ended run on a server (and reads the run back
        # for them), as it does in a study today: measured, not shown.
        with contextlib.redirect_stdout(io.StringIO()):
            run_id = claims.claim(key, name=key, tags=tags, parent_id=None)
            assert run_id is not None, "an uncontended claim was lost"
            track_runs.end_run(client, run_id, outcome=names.OUTCOME_OK)
        if i:
            costs.append(time.perf_counter() - t0)
    return costs, dict(client.calls)


def spread(xs: list[float], scale: float = 1.0, unit: str = "s", digits: int = 1) -> str:
    med = statistics.median(xs) * scale
    lo, hi = min(xs) * scale, max(xs) * scale
    return f"median {med:.{digits}f} {unit} (min-max {lo:.{digits}f}-{hi:.{digits}f}, n={len(xs)})"


def study_times(args, backends: dict[str, str], work: Path, env: dict[str, str]) -> None:
    """Each backend's wall seconds for the same study, runs interleaved across backends."""
    n_trials = 6 * args.seeds
    print(
        f"study: smoke x {args.seeds} seeds = {n_trials} trials, --workers {args.workers}; "
        f"{args.runs} runs per backend, interleaved; load average before: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    # Warm-up (not counted): data set cache, first open/migration of each store.
    for i, uri in enumerate(backends.values()):
        run_study(study_file(work, f"warm{i}", 1), uri, args.workers, work, env)
    times: dict[str, list[float]] = {label: [] for label in backends}
    for rep in range(args.runs):
        for i, (label, uri) in enumerate(backends.items()):
            study = study_file(work, f"bench{rep}x{i}", args.seeds)
            times[label].append(run_study(study, uri, args.workers, work, env))
            print(f"  run {rep + 1} {label}: {times[label][-1]:.1f} s", flush=True)
    local = times["local sqlite"]
    print("\nwall seconds per study (python -m lrstudy run, start-up included):")
    for label, xs in times.items():
        # Paired with the local-sqlite run of the same round (interleaved: same load).
        ratios = [x / b for x, b in zip(xs, local, strict=True)]
        print(
            f"  {label:<22} {spread(xs)}; vs local sqlite x{statistics.median(ratios):.2f} "
            f"(min-max x{min(ratios):.2f}-x{max(ratios):.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per backend (>= 3)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (6 configs)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--claims", type=int, default=50, help="claim+end samples per store")
    ap.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="uvicorn workers per server (mlflow's default is 4; measured here: with 2 or more "
        "every request takes ~45 ms longer, /health included)",
    )
    ap.add_argument("--claims-only", action="store_true", help="skip the study runs")
    args = ap.parse_args()
    from lrstudy.quiet import quiet_libraries

    quiet_libraries()  # before MLflow loads: no "View run ..." line per claimed run

    work = Path(tempfile.mkdtemp(prefix="lrstudy-bench-backends-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LRSTUDY_CACHE": str(work / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(LRSTUDY_CACHE=env["LRSTUDY_CACHE"])
    no_pg = why_no_postgres()
    with ExitStack() as stack:
        backends: dict[str, str] = {"local sqlite": f"sqlite:///{work / 'local.db'}"}
        t0 = time.perf_counter()
        srv = MlflowServer(
            f"sqlite:///{work / 'server.db'}", work / "srv-sqlite", workers=args.server_workers
        )
        stack.callback(srv.stop)
        backends["server on sqlite"] = srv.start().url
        if no_pg:
            print(f"(PostgreSQL leg skipped: {no_pg})")
        else:
            pg = stack.enter_context(postgres_cluster(durable=True))
            pg_srv = MlflowServer(
                pg.create_database("mlflow"), work / "srv-pg", workers=args.server_workers
            )
            stack.callback(pg_srv.stop)
            backends["server on PostgreSQL"] = pg_srv.start().url
        print(f"servers up in {time.perf_counter() - t0:.0f} s (not counted)")

        if not args.claims_only:
            study_times(args, backends, work, env)

        print(f"\nclaim protocol per trial (Claims.claim + end_run, uncontended, n={args.claims}):")
        for label, uri in backends.items():
            costs, calls = claim_costs(uri, args.claims)
            q = statistics.quantiles(costs, n=10)
            print(
                f"  {label:<22} {spread(costs, 1000, 'ms', 1)}; p10-p90 {q[0] * 1000:.1f}-"
                f"{q[-1] * 1000:.1f} ms"
            )
            per = ", ".join(
                f"{name} {len(xs) / args.claims:.0f}x{statistics.median(xs) * 1000:.0f} ms"
                for name, xs in sorted(calls.items(), key=lambda kv: -sum(kv[1]))
            )
            print(f"  {'':<22} per claim: {per}")
        print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
