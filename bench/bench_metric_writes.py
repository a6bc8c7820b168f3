"""Metric values written per second into a sqlite MLflow store: `log_batch` vs lrstudy's bulk path.

Variants, all in one run against one fresh store in a temp dir (each repeat logs into a new run;
the variants take turns within a repeat so machine load drifts hit all of them alike):
  log_batch        MlflowClient.log_batch, chunks of 1000 (MLflow's per-call cap)
  bulk/1000        lrstudy.track.bulk_metrics.write_metrics, calls of 1000 rows (the sink's frames)
  bulk/all         write_metrics, all values in one call
  writer:log_batch the writer process (lrstudy.track.writer) with LRSTUDY_BULK_METRICS=0, frames
                   of 1000 rows sent and acknowledged as MetricSink does
  writer:bulk      the writer process as lrstudy runs it (bulk path), same frames
  writer:bulk/10k  the same with frames of 10,000 rows: what larger sink frames would give (each
                   frame is one transaction, and a sqlite commit costs milliseconds of fsync)
Rows look like a training run's: 5 keys per step (lr, momentum, train/loss, train/grad_norm,
train/acc), distinct steps, one timestamp per 50 steps. Clocks cover the writes only (store and
writer process already open, one untimed warm-up pass per variant). Prints median and min-max
values/s per variant and the ratio of medians to log_batch measured in the same run.

Usage: python bench/bench_metric_writes.py [--values 50000] [--repeats 5] [--no-writer]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("lr", "momentum", "train/loss", "train/grad_norm", "train/acc")
CHUNK = 1000


def make_rows(n: int) -> list[tuple[str, float, int, int]]:
    t0 = int(time.time() * 1000)
    rows = []
    for i in range(n):
        step = i // len(KEYS)
        rows.append((KEYS[i % len(KEYS)], 1.0 / (1 + i), step, t0 + step // 50))
    return rows


def chunks(rows: list, size: int) -> list[list]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-writer", action="store_true", help="skip the writer-process variants")
    args = ap.parse_args()

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from lrstudy.track.bulk_metrics import store_for, write_metrics
    from lrstudy.track.writer import WriterProcess

    tmp = tempfile.mkdtemp(prefix="lrstudy-bench-writes-")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench")
    store = store_for(uri)
    rows = make_rows(args.values)

    def via_log_batch(run_id: str) -> None:
        for c in chunks(rows, CHUNK):
            metrics = [Metric(k, v, ts, s) for k, v, s, ts in c]
            client.log_batch(run_id, metrics=metrics, synchronous=True)

    def via_bulk_chunks(run_id: str) -> None:
        for c in chunks(rows, CHUNK):
            write_metrics(store, run_id, c)

    def via_bulk_all(run_id: str) -> None:
        write_metrics(store, run_id, rows)

    variants: dict[str, Callable[[str], None]] = {
        "log_batch": via_log_batch,
        "bulk/1000": via_bulk_chunks,
        "bulk/all": via_bulk_all,
    }
    writers: list[WriterProcess] = []
    if not args.no_writer:
        for name, flag in (("writer:log_batch", "0"), ("writer:bulk", "1")):
            os.environ["LRSTUDY_BULK_METRICS"] = flag  # read by the child when it starts
            w = WriterProcess(uri)
            w.wait_ready()
            writers.append(w)
            variants[name] = lambda run_id, w=w: [w.write(run_id, c) for c in chunks(rows, CHUNK)]
        variants["writer:bulk/10k"] = lambda run_id, w=writers[-1]: [
            w.write(run_id, c) for c in chunks(rows, 10 * CHUNK)
        ]

    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        # One untimed pass each first: statement compilation, lazy imports, the first pages.
        for name, fn in variants.items():
            fn(client.create_run(exp, run_name=f"{name}-warmup").info.run_id)
        for rep in range(args.repeats):
            for name, fn in variants.items():
                run_id = client.create_run(exp, run_name=f"{name}-{rep}").info.run_id
                t = time.perf_counter()
                fn(run_id)
                rates[name].append(len(rows) / (time.perf_counter() - t))
    finally:
        for w in writers:
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)

    base = statistics.median(rates["log_batch"])
    print(f"sqlite store in a temp dir; {args.values} values per repeat, {args.repeats} repeats")
    print(f"{'variant':<18}{'median values/s':>16}{'min-max':>22}{'vs log_batch':>14}")
    for name, r in rates.items():
        med = statistics.median(r)
        span = f"{min(r):,.0f}-{max(r):,.0f}"
        print(f"{name:<18}{med:>16,.0f}{span:>22}{med / base:>13.1f}x")


if __name__ == "__main__":
    main()
