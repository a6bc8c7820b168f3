"""Your own model in a study: what lrstudy's tracking costs per step on a user's LightningModule,
and what the population engine buys on a user's plain nn.Module.

Part 1 — per-step cost on the example LightningModule (examples/own_model: LitClassifier, 64-64-10,
on the DigitsData DataModule, batch 64, 23 steps/epoch, DataLoader(TensorDataset) as the user wrote
it), SGD 0.1 momentum 0.9, each setup in a fresh process, one torch thread:
  lightning  plain Lightning `fit`, no logger (the module's own configure_optimizers set to SGD 0.1)
  peer       Lightning + MLFlowLogger + LearningRateMonitor, logging every step (sqlite)
  lrstudy    lrstudy's trial of the same module: the study's SGD + constant schedule replace the
             module's, LR per group / momentum / loss / grad norm every step, the module's own
             metrics through its logger, into sqlite
Marginal cost per step = (t(E2) - t(E1)) / (steps(E2) - steps(E1)), which removes fixed costs.

Part 2 — a 40-trial study of a plain nn.Module (examples/own_model mymodels.nets.MLP on MNIST-1D,
5 LRs x 2 schedules x 4 seeds, 5 epochs), whole `lrstudy run` (1 worker, no report) with
`--engine trial` vs `--engine population`, fresh store each, interleaved.

Usage: python bench/bench_own_model.py [--e1 3 --e2 12 --repeats 3 --study-repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import ROOT, ratio_spread, spread, timed  # noqa: E402

EXAMPLE = ROOT / "examples" / "own_model"
STEPS_PER_EPOCH = 23  # 1438 training digits / batch 64, the last partial batch kept (Lightning)


def _module_and_data():
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(EXAMPLE))
    sys.path.insert(0, str(ROOT))
    from mymodels.data import DigitsData
    from mymodels.lit import LitClassifier

    class Sgd(LitClassifier):  # the user's module, with the optimizer the study will use
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    return Sgd, LitClassifier, DigitsData


def _trainer_kwargs(epochs: int) -> dict:
    return dict(max_epochs=epochs, accelerator="cpu", devices=1, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip


def child(mode: str, epochs: int) -> float:
    """One setup in this process; seconds of `fit` (lrstudy: of the trial, store set up before)."""
    import lightning as L

    Sgd, LitClassifier, DigitsData = _module_and_data()
    L.seed_everything(0, verbose=False)
    tmp = tempfile.mkdtemp()
    uri = f"sqlite:///{tmp}/mlflow.db"
    if mode == "lightning":
        trainer = L.Trainer(logger=False, **_trainer_kwargs(epochs))
        t0 = time.perf_counter()
        trainer.fit(Sgd(), datamodule=DigitsData())
        return time.perf_counter() - t0
    if mode == "peer":
        from lightning.pytorch.callbacks import LearningRateMonitor
        from lightning.pytorch.loggers import MLFlowLogger

        t0 = time.perf_counter()  # a user's script creates its store too
        logger = MLFlowLogger(experiment_name="bench", tracking_uri=uri)
        trainer = L.Trainer(logger=logger, log_every_n_steps=1,
                            callbacks=[LearningRateMonitor(logging_interval="step")],
                            **_trainer_kwargs(epochs))  # fmt: skip
        trainer.fit(Sgd(), datamodule=DigitsData())
        return time.perf_counter() - t0
    from lrstudy.plan import plan_trials
    from lrstudy.spec import parse_spec
    from lrstudy.track import runs
    from lrstudy.track.callback import LRStudyCallback
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.track.writer import writer_for
    from lrstudy.train.user_module import ModuleTask, run_module_trial

    spec = parse_spec(f"""
name: bench
task:
  module: {{class_path: mymodels.lit.LitClassifier}}
  datamodule: {{class_path: mymodels.data.DigitsData}}
train: {{epochs: {epochs}, accelerator: cpu}}
optimizers: [{{name: sgd, lr: 0.1, momentum: 0.9}}]
""")  # fmt: skip
    trial = plan_trials(spec)[0]
    task = ModuleTask(LitClassifier, DigitsData, True, True, False)
    client = open_client(uri)  # store and writer are set up once per study, not per trial
    writer_for(uri).wait_ready()
    exp = experiment_id(client, "bench")
    t0 = time.perf_counter()
    run_id = runs.start_run(client, exp, name=trial.name, tags={})
    callback = LRStudyCallback("bench", run_id=run_id, client=client)
    result = run_module_trial(trial, task, [callback], 0.1, spec.rank_metric[0])
    runs.end_run(client, run_id, outcome=result.outcome)
    return time.perf_counter() - t0


def _time(mode: str, epochs: int) -> float:
    cmd = [sys.executable, __file__, "--child", mode, str(epochs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return float(out.split("seconds")[-1].split()[0])


STUDY = """
name: bench_own_population
task:
  model: {class_path: mymodels.nets.MLP}
  dataset: mnist1d
train: {epochs: 5, batch_size: 100}
optimizers:
  - name: sgd
    lr: {low: 1.0e-3, high: 1.0, num: 5}
    momentum: 0.9
schedules: [{name: constant}, {name: cosine}]
seeds: [0, 1, 2, 3]
"""


def part2(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        study.write_text(STUDY)
        env = {"PYTHONPATH": f"{EXAMPLE}:{ROOT}"}  # the user's package, and lrstudy's source
        times: dict[str, list[float]] = {"trial": [], "population": []}
        for i in range(repeats):
            for engine in times:
                cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--engine", engine,
                       "--workers", "1", "--no-report",
                       "--tracking-uri", f"sqlite:///{tmp}/{engine}{i}.db"]  # fmt: skip
                times[engine].append(timed(cmd, env=env, cwd=Path(tmp)))
        print("\npart 2: 40-trial study of a plain nn.Module, whole `lrstudy run`, 1 worker")
        for engine, values in times.items():
            print(f"  --engine {engine:10s} {spread(values)}")
        print(f"  trial / population: {ratio_spread(times['trial'], times['population'])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--e1", type=int, default=3)
    ap.add_argument("--e2", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--study-repeats", type=int, default=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(f"seconds {child(args.child[0], int(args.child[1])):.4f}")
        return
    modes = ("lightning", "peer", "lrstudy")
    per_step: dict[str, list[float]] = {m: [] for m in modes}
    print("part 1: per-step cost on a user's LightningModule (marginal, one thread)")
    for _ in range(args.repeats):  # the modes interleaved, so the machine's drift hits all
        for mode in modes:
            t1, t2 = _time(mode, args.e1), _time(mode, args.e2)
            per_step[mode].append((t2 - t1) / ((args.e2 - args.e1) * STEPS_PER_EPOCH))
    for mode, marg in per_step.items():
        print(f"  {mode:10s} {statistics.median(marg) * 1e3:7.3f} ms/step (min "
              f"{min(marg) * 1e3:.3f}, max {max(marg) * 1e3:.3f}, n={len(marg)})")  # fmt: skip
    ratio = [a / b for a, b in zip(per_step["lrstudy"], per_step["lightning"], strict=True)]
    peer = [a / b for a, b in zip(per_step["peer"], per_step["lrstudy"], strict=True)]
    print(f"  lrstudy / lightning-no-logger: {statistics.median(ratio):.2f}x (min {min(ratio):.2f},"
          f" max {max(ratio):.2f})   goal <= 1.1x")  # fmt: skip
    print(f"  peer / lrstudy:                {statistics.median(peer):.1f}x (min {min(peer):.1f},"
          f" max {max(peer):.1f})   goal >= 4x", flush=True)  # fmt: skip
    part2(args.study_repeats)


if __name__ == "__main__":
    main()
