"""LR range test: exact restoration, group ratios, stopping, and the study side (find-lr, lr: auto)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from mlflow.tracking import MlflowClient
from torch import nn

from lrstudy import cli, find_lr, names
from lrstudy.cli_parser import build_parser
from lrstudy.errors import UserInputError
from lrstudy.plan import plan_trials
from lrstudy.rangetest.ramp import RAMP
from lrstudy.rangetest.study import auto_lr, find_lr_for_study
from lrstudy.spec import parse_spec


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on 2 shared cores: a second intra-op thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPEC = """
name: rt
task: {dataset: blobs, model: mlp, model_args: {hidden: [16]}, data_args: {n_samples: 400}}
train: {epochs: 1, batch_size: 20, threads: 1}
optimizers:
  - {name: sgd, lr: auto, momentum: 0.9}
  - {name: adam, lr: [1e-3], layer_lr: {decay: 0.5}}
seeds: [3, 4]
"""


class Net(nn.Module):
    """Parameters, a persistent and a non-persistent buffer (BatchNorm + a counter), dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 3)
        self.register_buffer("calls", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.body(x))


def _batches(n: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)
    ]


def _ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _two_group_adam(model: Net) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [
            {"params": model.body.parameters(), "name": "body", "lr": 1e-3},
            {"params": model.head.parameters(), "name": "head"},
        ],
        lr=1e-2,
    )


def test_restores_model_and_optimizer_bit_for_bit():
    torch.manual_seed(0)
    model, batches = Net(), _batches()
    opt = _two_group_adam(model)
    for b in batches[:3]:  # give the optimizer state and the parameters gradients
        opt.zero_grad()
        _ce(model, b).backward()
        opt.step()
    model.eval()
    state = copy.deepcopy(model.state_dict())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt_state = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()

    result = find_lr(model, batches, opt, steps=40, loss_fn=_ce)
    assert len(result.lrs) > 10

    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    assert all(torch.equal(grads[k], p.grad) for k, p in model.named_parameters())
    now = opt.state_dict()
    assert [g["lr"] for g in now["param_groups"]] == [1e-3, 1e-2]
    assert now["param_groups"] == opt_state["param_groups"]
    for pid, s in opt_state["state"].items():
        assert all(torch.equal(v, now["state"][pid][k]) for k, v in s.items())
    assert not model.training and not model.body[1].training
    assert torch.equal(torch.get_rng_state(), rng)


def test_all_groups_scaled_by_one_factor():
    torch.manual_seed(0)
    model = Net()
    opt = _two_group_adam(model)
    seen: list[tuple[float, float]] = []

    def loss_fn(m, batch):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        return _ce(m, batch)

    result = find_lr(
        model, _batches(), opt, lr_min=1e-5, lr_max=1.0, steps=20, stop_factor=None, loss_fn=loss_fn
    )
    assert result.group_ratios == [pytest.approx(0.1), 1.0]  # relative to defaults["lr"]
    assert len(seen) == 20
    for (body, head), lr in zip(seen, result.lrs):
        assert head == pytest.approx(lr) and body == pytest.approx(0.1 * lr)
    assert result.lrs[0] == pytest.approx(1e-5) and result.lrs[-1] == pytest.approx(1.0)


def test_lightning_module_training_step_and_configure_optimizers():
    class Boring(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])  # no Trainer here: must not break the test
            return out

    torch.manual_seed(0)
    module = Boring()
    batches = [torch.randn(4, 32) for _ in range(5)]
    before = copy.deepcopy(module.state_dict())
    result = find_lr(module, batches, lr_min=1e-4, lr_max=10.0, steps=60)
    assert result.stop_index is not None and "x best" in result.stop_reason
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert result.recommended is not None
    # The rules saw only points before the stop.
    assert all(v <= result.lrs[result.stop_index] for v in result.suggestions.values() if v)


def test_one_shot_iterator_ends_the_test_early():
    torch.manual_seed(0)
    model = Net()
    result = find_lr(model, iter(_batches(12)), "sgd", steps=30, loss_fn=_ce)
    assert len(result.lrs) == 12 and "ran out after 12" in result.stop_reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_min": 1.0, "lr_max": 0.1}, r"below lr_max \(--max\)"),
        ({"lr_min": 0.0}, r"lr_min \(--min\) must be"),
        ({"steps": 5}, r"steps \(--steps\) must be an integer >= 10"),
        ({"mode": "cos"}, r"mode \(--mode\) must be"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"stop_factor": 1.0}, "stop_factor"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_lr(Net(), _batches(), "sgd", loss_fn=_ce, **kwargs)


def test_manual_optimization_needs_a_loss_fn():
    module = BoringModel()
    module.automatic_optimization = False
    with pytest.raises(ValueError, match="manual optimization"):
        find_lr(module, [torch.randn(2, 32)], "sgd")


def test_figure_is_a_plain_matplotlib_figure(tmp_path):
    torch.manual_seed(0)
    result = find_lr(Net(), _batches(), "adam", steps=30, loss_fn=_ce)
    fig = result.figure()
    fig.savefig(tmp_path / "rt.png")
    assert (tmp_path / "rt.png").stat().st_size > 1000


# --- the study side ---------------------------------------------------------------------------


QUICK = {"lr_min": 1e-5, "steps": 40}  # a short ramp: seconds, yet a curve the rules can read


def _range_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs(
        [exp.experiment_id], f"tags.`{names.TAG_KIND}` = '{names.KIND_RANGE_TEST}'"
    )


def test_find_lr_for_study_logs_a_range_test_run_and_prints_nothing(store_uri, capsys):
    spec = parse_spec(SPEC)
    found = find_lr_for_study(spec, "rt.yaml", store_uri, optimizer="adam", **QUICK)
    assert capsys.readouterr().out == ""  # the library returns its text; the CLI prints it
    for rule in ("steepest", "valley", "min_div10", "slide", "spread (max/min)", "Recommended LR"):
        assert rule in found.text
    assert found.result.recommended is not None and found.result.steps == 40
    client = MlflowClient(store_uri)
    (run,) = _range_runs(client, "rt")
    assert run.info.run_id == found.run_id
    assert run.data.tags[names.TAG_STUDY] == "rt" and run.info.status == "FINISHED"
    p = run.data.params
    assert p[names.PARAM_OPTIMIZER] == "adam" and p[names.PARAM_MODE] == "exp"
    assert p[names.PARAM_STEPS] == "40" and float(p[names.PARAM_LR_MIN]) == 1e-5
    assert p["group_ratios"] == "[0.5, 1.0]"  # layer_lr decay 0.5 over fc1, head
    rule = p[names.PARAM_SUGGESTION]
    assert names.RT_SUGGESTION_PREFIX + rule in run.data.metrics
    lrs = client.get_metric_history(run.info.run_id, names.LR)
    assert [m.step for m in lrs] == list(range(len(lrs))) and lrs[0].value == pytest.approx(1e-5)
    assert len(client.get_metric_history(run.info.run_id, names.RT_SMOOTHED)) >= len(lrs) - 1
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [names.FIGURE_ARTIFACT]


def test_find_lr_command_prints_the_result_and_where_it_was_logged(tmp_path, store_uri, capsys):
    study = tmp_path / "rt.yaml"
    study.write_text(SPEC)
    argv = ["find-lr", str(study), "--optimizer", "adam", "--min", "1e-5", "--steps", "40"]
    assert cli.main([*argv, "--tracking-uri", store_uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "LR range test: study rt, adam, mlp on blobs, batch 20, seed 3"
    assert out[1].startswith("exp ramp 1e-05 -> 10 over 40 steps; ")
    assert out[2:4] == ["", f"  {'rule':<10} {'suggested LR':>12}"]
    assert out[-2].startswith("Recommended LR ")
    (run,) = _range_runs(MlflowClient(store_uri), "rt")
    assert out[-1] == f"run {run.info.run_id} in experiment 'rt' ({store_uri})"


def test_find_lr_command_and_find_lr_share_the_ramp_defaults():
    args = build_parser().parse_args(["find-lr", "x.yaml"])
    assert {k: getattr(args, k) for k in asdict(RAMP)} == asdict(RAMP)
    assert (RAMP.lr_min, RAMP.lr_max, RAMP.steps, RAMP.mode) == (1e-7, 10.0, 200, "exp")


def test_find_lr_command_bad_ramp_is_one_line_and_exit_2(tmp_path, capsys):
    study = tmp_path / "rt.yaml"
    study.write_text(SPEC)
    uri = f"sqlite:///{tmp_path}/never.db"
    assert cli.main(["find-lr", str(study), "--steps", "3", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err == (
        "lrstudy: error: steps (--steps) must be an integer >= 10 (the rules need a curve), got 3\n"
    )
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "rmsprop"}, "'rmsprop' is not in this study; its optimizers: sgd, adam"),
        ({"lr_min": 1.0, "lr_max": 1.0}, r"--min\) 1 must be below lr_max \(--max\) 1"),
        ({"steps": 3}, r"steps \(--steps\) must be an integer >= 10"),
        ({"mode": "cos"}, r"mode \(--mode\) must be 'exp' or 'linear', got 'cos'"),
    ],
)
def test_find_lr_for_study_rejects_bad_input_before_touching_mlflow(tmp_path, kwargs, message):
    uri = f"sqlite:///{tmp_path}/never.db"
    with pytest.raises(UserInputError, match=message):
        find_lr_for_study(parse_spec(SPEC), "rt.yaml", uri, **kwargs)
    assert not (tmp_path / "never.db").exists()


def test_auto_lr_runs_once_then_reuses_the_logged_suggestion(store_uri):
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.train.data import load_dataset

    spec = parse_spec(SPEC)
    trials = [t for t in plan_trials(spec) if t.lr_auto]
    assert {t.seed for t in trials} == {3, 4}
    data = load_dataset(spec.task.dataset, spec.task.data_args)
    client = open_client(store_uri)
    exp = experiment_id(client, spec.experiment)
    lr, source = auto_lr(client, exp, spec, trials[0], data)
    assert math.isfinite(lr) and lr > 0 and source.startswith("range_test:")
    (run,) = _range_runs(client, "rt")
    assert run.data.tags[names.TAG_RANGE_TEST_KEY]
    # Another seed of the same configuration, and a resumed study: same run, same LR.
    assert auto_lr(client, exp, spec, trials[1], data) == (lr, source)
    assert len(_range_runs(client, "rt")) == 1
    # Deterministic: recomputed from scratch (the run deleted), the answer is identical.
    client.delete_run(run.info.run_id)
    assert auto_lr(client, exp, spec, trials[0], data) == (lr, source)
