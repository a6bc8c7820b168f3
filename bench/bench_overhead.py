"""Per-step cost of one MNIST-1D MLP trial: lrstudy vs what a user would otherwise run.

Measured in one run, each setup in a fresh process, one torch thread (as the peer scripts do):
  floor      plain PyTorch loop (../shared/peers/peer_overhead.py floor)
  lightning  Lightning Trainer, no logger (peer_overhead.py lightning)
  peer       Lightning + MLFlowLogger + LearningRateMonitor, every step (peer_overhead.py peer)
  lrstudy    lrstudy's trial: same model, data, optimizer (SGD 0.1, momentum 0.9), cosine schedule,
             batch 100, 40 steps/epoch, tracking LR/momentum/loss/grad-norm every step into sqlite

lrstudy's clock starts after the store and its writer process exist (both are set up once per
study, not per trial); the peer's includes its store creation, as a user's script would.
Each setup runs at two lengths (E1 and E2 epochs); the marginal cost per step is
(t(E2) - t(E1)) / (steps(E2) - steps(E1)), which removes fixed costs (imports, store creation).
Totals at E2 are printed too. Usage: python bench/bench_overhead.py [--e1 5 --e2 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "peer_overhead.py"
STEPS_PER_EPOCH = 40  # 4000 training samples / batch 100


def lrstudy_trial(epochs: int) -> float:
    """Run the trial in this process; seconds from run creation to the last metric written."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from lrstudy.plan import plan_trials
    from lrstudy.spec import parse_spec
    from lrstudy.track import runs
    from lrstudy.track.callback import LRStudyCallback
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.track.writer import writer_for
    from lrstudy.train.data import load_dataset
    from lrstudy.train.module import run_trial

    spec = parse_spec(
        f"""
name: bench
task: {{dataset: mnist1d, model: mlp}}
train: {{epochs: {epochs}, batch_size: 100, accelerator: cpu}}
optimizers: [{{name: sgd, lr: 0.1, momentum: 0.9}}]
schedules: [{{name: cosine}}]
"""
    )
    trial = plan_trials(spec)[0]
    data = load_dataset("mnist1d")
    tmp = tempfile.mkdtemp()
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = open_client(uri)  # store creation is per study, not part of a trial
    writer_for(uri).wait_ready()  # likewise the writer process (started once per study)
    exp = experiment_id(client, "bench")
    t0 = time.perf_counter()
    run_id = runs.start_run(client, exp, name=trial.name, tags={})
    callback = LRStudyCallback("bench", run_id=run_id, client=client)
    result = run_trial(trial, data, [callback])
    runs.end_run(client, run_id, outcome=result.outcome)
    return time.perf_counter() - t0


def _time(mode: str, epochs: int) -> float:
    if mode == "lrstudy":
        cmd = [sys.executable, __file__, "--child", str(epochs)]
    else:
        cmd = [sys.executable, str(PEER), mode, str(epochs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split("seconds")[-1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--e1", type=int, default=5)
    ap.add_argument("--e2", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(f"seconds {lrstudy_trial(args.child):.4f}")
        return
    if not PEER.exists():
        sys.exit(f"peer script not found: {PEER} (expected ../shared/peers beside the repo)")
    modes = ["floor", "lightning", "peer", "lrstudy"]
    per_step, totals = {}, {}
    for mode in modes:
        marg, tot = [], []
        for _ in range(args.repeats):
            t1, t2 = _time(mode, args.e1), _time(mode, args.e2)
            marg.append((t2 - t1) / ((args.e2 - args.e1) * STEPS_PER_EPOCH))
            tot.append(t2 / (args.e2 * STEPS_PER_EPOCH))
        per_step[mode], totals[mode] = marg, tot
        print(
            f"{mode:10s} marginal {statistics.median(marg) * 1e3:7.3f} ms/step "
            f"(min {min(marg) * 1e3:.3f}, max {max(marg) * 1e3:.3f}, n={len(marg)}); "
            f"total at {args.e2} epochs {statistics.median(tot) * 1e3:7.3f} ms/step",
            flush=True,
        )
    med = {m: statistics.median(v) for m, v in per_step.items()}
    tmed = {m: statistics.median(v) for m, v in totals.items()}
    print("\nratios (median marginal per-step cost; total-time ratio in brackets):")
    print(
        f"  lrstudy / lightning-no-logger: {med['lrstudy'] / med['lightning']:.2f}x "
        f"[{tmed['lrstudy'] / tmed['lightning']:.2f}x]   goal <= 1.05x"
    )
    print(
        f"  lrstudy / floor:               {med['lrstudy'] / med['floor']:.2f}x "
        f"[{tmed['lrstudy'] / tmed['floor']:.2f}x]   stretch goal <= 1.3x"
    )
    print(
        f"  peer / lrstudy:                {med['peer'] / med['lrstudy']:.1f}x "
        f"[{tmed['peer'] / tmed['lrstudy']:.1f}x]   goal >= 4x"
    )


if __name__ == "__main__":
    main()
