"""`LRStudyCallback` on LightningModules that are not ours, read back from a real sqlite store."""

from __future__ import annotations

import math
import re

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient

from lrstudy import LRStudyCallback, names


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on 2 shared cores: a second intra-op thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One store for the module: creating a sqlite store costs seconds; every test has its own runs.
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/m.db"


def _trainer(callback: LRStudyCallback, **kw) -> L.Trainer:
    opts = {
        "max_steps": 6,
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(callbacks=[callback], **{**opts, **kw})


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [
        (m.step, m.value)
        for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    ]


# BoringModel's loss (MSE on batches of 2) swings 100x from step to step, so tests that are not
# about the divergence guard turn its factor rule off (divergence_factor=None).


class NamedGroups(BoringModel):
    """Two named param groups (weight, bias) at different LRs, StepLR stepping every batch."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(
            [
                {"params": [self.layer.weight], "name": "weight"},
                {"params": [self.layer.bias], "name": "bias", "lr": 0.01},
            ],
            lr=0.1,
            momentum=0.9,
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Unnamed(BoringModel):
    def configure_optimizers(self):
        return torch.optim.Adam(
            [{"params": [self.layer.weight]}, {"params": [self.layer.bias], "lr": 1e-2}], lr=1e-3
        )


def test_one_lr_per_step_per_named_group(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    _trainer(cb).fit(NamedGroups())
    client = MlflowClient(uri)
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.TAG_KIND] == names.KIND_PLUGIN
    assert run.data.tags[names.TAG_STUDY] == "plug"
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK
    assert run.data.tags[names.TAG_PARAM_GROUPS] == "weight,bias"
    assert client.get_experiment(run.info.experiment_id).name == "plug"
    for group, base in (("weight", 0.1), ("bias", 0.01)):
        got = _history(client, cb.run_id, f"{names.LR}/{group}")
        assert [s for s, _ in got] == list(range(6))
        assert [v for _, v in got] == pytest.approx([base * 0.5 ** (s // 2) for s in range(6)])
        assert [v for _, v in _history(client, cb.run_id, f"{names.MOMENTUM}/{group}")] == [0.9] * 6
    assert [s for s, _ in _history(client, cb.run_id, names.TRAIN_LOSS)] == list(range(6))
    norms = _history(client, cb.run_id, names.GRAD_NORM)
    assert len(norms) == 6 and all(v > 0 for _, v in norms)


def test_unnamed_groups_are_pg_i_and_a_single_group_is_bare_lr(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    _trainer(cb, max_steps=3).fit(Unnamed())
    client = MlflowClient(uri)
    assert [v for _, v in _history(client, cb.run_id, "lr/pg0")] == pytest.approx([1e-3] * 3)
    assert [v for _, v in _history(client, cb.run_id, "lr/pg1")] == pytest.approx([1e-2] * 3)
    assert [v for _, v in _history(client, cb.run_id, "momentum/pg0")] == pytest.approx([0.9] * 3)

    single = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    _trainer(single, max_steps=3).fit(BoringModel())  # SGD lr=0.1 + StepLR(step_size=1) per epoch
    assert _history(client, single.run_id, names.LR) == [(0, 0.1), (1, 0.1), (2, 0.1)]
    assert not client.get_metric_history(single.run_id, "lr/pg0")


class TwoOptimizers(BoringModel):
    """Manual optimization with an SGD and an Adam, one unnamed group each."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.other = torch.nn.Linear(32, 2)

    def training_step(self, batch, batch_idx):
        opt_a, opt_b = self.optimizers()
        loss = self.step(batch) + self.other(batch).sum() * 0
        for opt in (opt_a, opt_b):
            opt.zero_grad()
        self.manual_backward(loss + self.other(batch).pow(2).mean())
        opt_a.step()
        opt_b.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.Adam(
            self.other.parameters(), lr=1e-3
        )


def test_two_optimizers_with_manual_optimization(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    _trainer(cb, max_steps=8).fit(TwoOptimizers())  # max_steps counts both optimizers' steps
    client = MlflowClient(uri)
    sgd = _history(client, cb.run_id, "lr/sgd0_pg0")
    adam = _history(client, cb.run_id, "lr/adam1_pg0")
    assert sgd == [(s, 0.1) for s in range(4)]
    assert adam == [(s, pytest.approx(1e-3)) for s in range(4)]
    assert [s for s, _ in _history(client, cb.run_id, names.TRAIN_LOSS)] == list(range(4))
    assert len(_history(client, cb.run_id, f"{names.GRAD_NORM}/opt0")) == 4
    assert len(_history(client, cb.run_id, f"{names.GRAD_NORM}/opt1")) == 4


def test_logs_into_the_mlflow_logger_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"  # its own store: the test counts experiments
    logger = MLFlowLogger(experiment_name="theirs", tracking_uri=uri)
    cb = LRStudyCallback(
        "plug", divergence_factor=None
    )  # no tracking_uri: it must follow the logger, not the default
    _trainer(cb, logger=logger, max_steps=4, log_every_n_steps=1).fit(NamedGroups())
    assert cb.run_id == logger.run_id
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.data.tags[names.TAG_STUDY] == "plug"
    assert run.data.tags[names.TAG_KIND] == names.KIND_PLUGIN
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK
    assert len(_history(client, logger.run_id, "lr/weight")) == 4
    assert len(client.search_experiments()) == 2  # "theirs" and MLflow's Default: nothing else


class Exploding(BoringModel):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=50.0)


def test_divergence_guard_stops_and_tags(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, sync_every=1)
    trainer = _trainer(cb, max_steps=200)
    trainer.fit(Exploding())
    assert cb.diverged_at is not None and trainer.global_step < 50
    assert trainer.global_step == cb.diverged_at + 1  # stopped right after the step that diverged
    run = MlflowClient(uri).get_run(cb.run_id)
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_DIVERGED
    assert run.data.tags[names.TAG_DIVERGED_AT] == str(cb.diverged_at)
    assert re.search(r"x (first|initial) loss|non-finite", run.data.tags[names.TAG_DIVERGED_REASON])
    assert run.info.status == "FINISHED"


def test_divergence_guard_can_only_tag(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, sync_every=1, stop_on_divergence=False)
    trainer = _trainer(cb, max_steps=30)
    trainer.fit(Exploding())
    assert cb.diverged_at is not None and trainer.global_step == 30


class EpochLogger(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("mine/epoch_mean", out["loss"], on_step=False, on_epoch=True)
        self.log("both", out["loss"], on_step=True, on_epoch=True)
        self.log(
            names.TRAIN_LOSS_EPOCH, out["loss"], on_step=False, on_epoch=True
        )  # "train/loss" + "_epoch"
        self.log(
            names.TRAIN_LOSS, out["loss"], on_step=False, on_epoch=True
        )  # ours per step: not forwarded
        return out

    def validation_step(self, batch, batch_idx):
        self.log("val/custom", self.step(batch))


def test_epoch_metrics_are_forwarded(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    trainer = _trainer(cb, max_steps=-1, max_epochs=3, limit_train_batches=4, limit_val_batches=2)
    trainer.fit(EpochLogger())
    client = MlflowClient(uri)
    forwarded = ("mine/epoch_mean", "both_epoch", "val/custom", names.TRAIN_LOSS_EPOCH)
    for key in (*forwarded, names.EPOCH, names.EPOCH_SECONDS):
        assert [s for s, _ in _history(client, cb.run_id, key)] == [4, 8, 12], key
    assert _history(client, cb.run_id, names.EPOCH) == [(4, 1), (8, 2), (12, 3)]
    for skipped in ("both", "both_step"):
        assert not client.get_metric_history(cb.run_id, skipped)
    assert [s for s, _ in _history(client, cb.run_id, names.TRAIN_LOSS)] == list(range(12))


class Recording(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.raw: list[float] = []

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.raw.append(out["loss"].item())
        return out


def test_gradient_accumulation_logs_one_loss_per_optimizer_step(uri):
    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    module = Recording()
    _trainer(cb, max_steps=-1, max_epochs=1, limit_train_batches=6, accumulate_grad_batches=3).fit(
        module
    )
    client = MlflowClient(uri)
    losses = _history(client, cb.run_id, names.TRAIN_LOSS)
    expected = [sum(module.raw[i : i + 3]) / 3 for i in (0, 3)]
    assert [s for s, _ in losses] == [0, 1]
    assert [v for _, v in losses] == pytest.approx(expected, rel=1e-5)
    assert [s for s, _ in _history(client, cb.run_id, names.LR)] == [0, 1]


def test_a_crash_closes_the_run_as_failed(uri):
    class Crashing(BoringModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    cb = LRStudyCallback("plug", tracking_uri=uri, divergence_factor=None)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(cb).fit(Crashing())
    run = MlflowClient(uri).get_run(cb.run_id)
    assert run.info.status == "FAILED" and run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_FAILED
    assert len(MlflowClient(uri).get_metric_history(cb.run_id, names.LR)) == 3  # flushed


def test_fluent_runs_inside_fit_get_the_study_context(uri):
    from lrstudy.track.context_provider import current_tags

    seen = []

    class Peek(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append(current_tags())
            return super().training_step(batch, batch_idx)

    cb = LRStudyCallback("plug", tracking_uri=uri, tags={names.TAG_TRIAL_KEY: "k"})
    _trainer(cb, max_steps=1).fit(Peek())
    assert seen[0][names.TAG_STUDY] == "plug" and seen[0][names.TAG_TRIAL_KEY] == "k"
    assert current_tags() == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"divergence_factor": 1.0}, "divergence_factor must be a number > 1"),
        ({"divergence_factor": "10"}, "divergence_factor must be a number > 1"),
        ({"sync_every": 0}, "sync_every must be an integer >= 1"),
        ({"run_id": "abc"}, "run_id needs the MlflowClient"),
        ({"study": ""}, "study must be a non-empty string"),
        ({"tracking_uri": 5}, "tracking_uri must be a non-empty string"),
        ({"stop_on_divergence": "yes"}, "stop_on_divergence must be True or False"),
        ({"tags": ["a"]}, "tags must be a dict"),
    ],
)
def test_arguments_are_validated_in_init(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRStudyCallback(**kwargs)


def test_nan_metric_values_are_not_lost(uri):
    class NaNLoss(BoringModel):
        def training_step(self, batch, batch_idx):
            return {"loss": super().training_step(batch, batch_idx)["loss"] * math.nan}

    cb = LRStudyCallback("plug", tracking_uri=uri, sync_every=1)
    _trainer(cb, max_steps=5).fit(NaNLoss())
    assert cb.diverged_at == 0 and "non-finite" in cb.diverged_reason
    (entry,) = MlflowClient(uri).get_metric_history(cb.run_id, names.TRAIN_LOSS)
    assert math.isnan(entry.value)


def test_divergence_rule_uses_the_mean_of_the_first_losses():
    from lrstudy.track.divergence import DivergenceGuard

    g = DivergenceGuard(factor=10)
    assert not g.check([(0, 0.1), (1, 3.0), (2, 2.0), (3, 2.0), (4, 2.9)])  # initial loss 2.0
    # (3.0 is 30x the first loss: during the first steps only a 100x jump counts.)
    assert g.initial_loss == pytest.approx(2.0)
    assert not g.check([(5, 19.9)])
    assert g.check([(6, 20.1), (7, math.inf)])
    assert g.diverged_at == 6 and "x initial loss 2" in g.reason


def test_divergence_rule_catches_an_immediate_blow_up():
    from lrstudy.track.divergence import DivergenceGuard

    g = DivergenceGuard(factor=10)
    assert g.check([(0, 2.3), (1, 40.0), (2, 1e4)])
    assert g.diverged_at == 2 and "100 x first loss 2.3" in g.reason


def test_divergence_rule_non_finite_always_counts_and_negative_losses_never_by_factor():
    from lrstudy.track.divergence import DivergenceGuard

    assert DivergenceGuard(factor=None).check([(0, 1.0), (1, math.nan)])
    g = DivergenceGuard(factor=2)
    assert not g.check([(i, -1.0) for i in range(5)] + [(5, 100.0)])


class OneLR(BoringModel):
    """A user's module with its LR as an init arg (what a hand-rolled sweep varies)."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_plugin_runs_log_their_configuration_and_group_themselves(tmp_path):
    # Issue 17: a user's own loop (3 LRs x 2 seeds, no logger of their own) was reported as
    # "1 configurations, 6 runs": the runs carried no params to group by.
    from lrstudy.report.results import load_results

    uri = f"sqlite:///{tmp_path}/m.db"
    for lr in (0.001, 0.01, 0.1):
        for seed in (0, 1):
            L.seed_everything(seed, verbose=False)
            cb = LRStudyCallback("myloop", tracking_uri=uri, divergence_factor=None,
                                 params={"width": 32})  # fmt: skip
            _trainer(cb).fit(OneLR(lr))
    client = MlflowClient(uri)
    run = client.get_run(cb.run_id)
    assert run.data.params["optimizer"] == "SGD"
    assert float(run.data.params["lr"]) == 0.1
    assert run.data.params["opt.momentum"] == "0.9"
    assert run.data.params["schedule"] == "StepLR"
    assert run.data.params["seed"] == "1" and run.data.params["width"] == "32"
    assert run.data.tags[names.TAG_CONFIG_PARAMS] == '["width"]'
    df = load_results("myloop", tracking_uri=uri)
    assert df.groupby("config").size().to_dict() == {
        f"SGD · StepLR · width=32 · lr={lr}": 2 for lr in ("0.001", "0.01", "0.1")
    }


def test_plugin_params_leave_an_mlflow_loggers_own_params_alone(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    logger = MLFlowLogger(experiment_name="withlogger", tracking_uri=uri)
    logger.log_hyperparams({"lr": "from the user"})
    cb = LRStudyCallback(divergence_factor=None)
    _trainer(cb, logger=logger).fit(OneLR(0.05))
    params = MlflowClient(uri).get_run(logger.run_id).data.params
    assert params["lr"] == "from the user" and params["optimizer"] == "SGD"
