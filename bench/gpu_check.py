"""GPU path check and timing (run on a machine with CUDA; CI never has one).

1. `python -m lrstudy run studies/smoke.yaml` with `accelerator: auto` into a fresh sqlite store,
   read back: every trial ran on cuda and logged exactly one `lr` per optimizer step.
2. Marginal per-step time of the quickstart's MNIST-1D MLP trial on the GPU (two run lengths), to
   put beside ../shared/peers/lightning_step.py's plain-loop and Lightning figures on the same GPU.
Usage: python bench/gpu_check.py OUT_DIR
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check_smoke(out: Path) -> None:
    from mlflow.tracking import MlflowClient

    from lrstudy import names

    uri = f"sqlite:///{out}/gpu.db"
    cmd = [
        sys.executable,
        "-m",
        "lrstudy",
        "run",
        str(ROOT / "studies/smoke.yaml"),
        "--tracking-uri",
        uri,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--no-report"], check=True, cwd=ROOT)
    print(f"smoke study on GPU: {time.perf_counter() - t0:.1f} s wall")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke").experiment_id
    trials = [r for r in client.search_runs([exp]) if r.data.tags.get(names.TAG_KIND) == "trial"]
    devices = {r.data.tags.get(names.TAG_DEVICE) for r in trials}
    bad = []
    for r in trials:
        if r.data.tags[names.TAG_OUTCOME] != "ok":
            continue
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, names.LR))
        if steps != list(range(int(r.data.params["total_steps"]))):
            bad.append(r.info.run_name)
    outcomes = sorted(r.data.tags[names.TAG_OUTCOME] for r in trials)
    print(
        f"trials {len(trials)}, devices {devices}, outcomes {outcomes}, lr-count mismatches {bad}"
    )


def time_trial() -> None:
    import torch

    from lrstudy.plan import plan_trials
    from lrstudy.spec import parse_spec
    from lrstudy.track import runs
    from lrstudy.track.callback import LRStudyCallback
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.train.data import load_dataset
    from lrstudy.train.module import run_trial

    data = load_dataset("mnist1d")
    client = open_client(f"sqlite:////tmp/gpu_bench_{time.time_ns()}.db")
    exp = experiment_id(client, "gpu")

    def one(epochs: int, tracked: bool) -> float:
        spec = parse_spec(
            f"name: g\ntask: {{dataset: mnist1d, model: mlp}}\n"
            f"train: {{epochs: {epochs}, batch_size: 100, accelerator: gpu}}\n"
            "optimizers: [{name: sgd, lr: 0.1, momentum: 0.9}]\nschedules: [{name: cosine}]\n"
        )
        trial = plan_trials(spec)[0]
        rid = runs.start_run(client, exp, name="t", tags={})
        cbs = [LRStudyCallback("g", run_id=rid, client=client)] if tracked else []
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_trial(trial, data, cbs)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    one(2, True)
    for tracked in (False, True):
        marg = []
        for _ in range(3):
            a, b = one(5, tracked), one(25, tracked)
            marg.append((b - a) / (20 * 40) * 1e3)
        label = "lrstudy (tracked)" if tracked else "lrstudy module, no callback"
        print(
            f"{label}: marginal {sorted(marg)[1]:.3f} ms/step (runs: {', '.join(f'{m:.3f}' for m in marg)})"
        )


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp")
    check_smoke(out)
    time_trial()
