"""Optimizers, layer-wise param groups and the schedule adapter, on tiny real models."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from lrstudy.schedules.catalog import build_schedule
from lrstudy.spec.optimizers import OPTIMIZERS
from lrstudy.train.optim import (
    ScheduleAdapter,
    build_optimizer,
    make_scheduler,
    momentum_of,
)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _groups(model: nn.Sequential) -> list[tuple[str, list[nn.Parameter]]]:
    return [(f"fc{i}", list(model[j].parameters())) for i, j in enumerate((0, 2, 4))]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_and_trains_one_step(name: str) -> None:
    model = _model()
    opt, names = build_optimizer(model, name, OPTIMIZERS[name].default_lr, {})
    assert names == ["all"] and opt.param_groups[0]["name"] == "all"
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_layer_decay_gives_exact_group_lrs_and_names() -> None:
    model = _model()
    opt, names = build_optimizer(model, "adam", 0.01, {}, {"decay": 0.5}, _groups(model))
    assert names == ["fc0", "fc1", "fc2"]
    assert [g["name"] for g in opt.param_groups] == names
    expected = [0.01 * 0.5**2, 0.01 * 0.5, 0.01]
    assert [g["lr"] for g in opt.param_groups] == expected
    assert [g["lrstudy_peak_lr"] for g in opt.param_groups] == expected


def test_explicit_layer_multipliers() -> None:
    model = _model()
    opt, _ = build_optimizer(model, "sgd", 0.1, {}, [0.0, 0.5, 2], _groups(model))
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.1 * 0.5, 0.1 * 2.0]


def test_layer_multiplier_count_must_match_groups() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"layer_lr has 2 multipliers but the model has 3 layer"):
        build_optimizer(model, "sgd", 0.1, {}, [1.0, 1.0], _groups(model))


@pytest.mark.parametrize(
    ("layer_lr", "match"),
    [({"decay": 0}, "decay=0"), ({"factor": 2}, "layer_lr must be"), ([1, -1, 1], "-1")],
)
def test_bad_layer_lr(layer_lr: object, match: str) -> None:
    model = _model()
    with pytest.raises(ValueError, match=match):
        build_optimizer(model, "sgd", 0.1, {}, layer_lr, _groups(model))  # type: ignore[arg-type]


def test_layer_lr_needs_groups_that_cover_the_model() -> None:
    model = _model()
    with pytest.raises(ValueError, match="needs the model's layer groups"):
        build_optimizer(model, "sgd", 0.1, {}, {"decay": 0.5})
    with pytest.raises(ValueError, match="leave 2 trainable"):
        build_optimizer(model, "sgd", 0.1, {}, [1, 1], _groups(model)[:2])


def test_unknown_optimizer_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'; allowed: sgd, momentum"):
        build_optimizer(_model(), "adamm", 0.1, {})


def test_hparams_override_catalog_defaults() -> None:
    opt, _ = build_optimizer(_model(), "adamw", 1e-3, {"eps": 1e-6, "betas": [0.8, 0.95]})
    group = opt.param_groups[0]
    assert group["eps"] == 1e-6 and group["betas"] == (0.8, 0.95) and group["weight_decay"] == 1e-2


@pytest.mark.parametrize(
    ("name", "momentum"),
    [("sgd", 0.0), ("momentum", 0.9), ("rmsprop", 0.0), ("adam", 0.9), ("nadam", 0.9)]
    + [("adagrad", None), ("adadelta", None)],
)
def test_momentum_of(name: str, momentum: float | None) -> None:
    opt, _ = build_optimizer(_model(), name, 0.01, {})
    assert momentum_of(opt, opt.param_groups[0]) == momentum


# --- the adapter ---


def _scalar_sgd(peak_lrs: list[float]) -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
    """SGD on scalar params whose loss is their sum: each step moves each param by exactly -lr."""
    params = [nn.Parameter(torch.zeros((), dtype=torch.float64)) for _ in peak_lrs]
    groups = [
        {"params": [p], "lr": lr, "lrstudy_peak_lr": lr}
        for p, lr in zip(params, peak_lrs, strict=True)
    ]
    return torch.optim.SGD(groups, lr=peak_lrs[-1]), params


@pytest.mark.parametrize(
    ("name", "args", "warmup"),
    [
        ("cosine", {"min": 0.1}, 5),
        ("one_cycle", {}, 0),
        ("step", {"every": 1, "gamma": 0.5}, 3),
        ("cyclic", {"mode": "triangular2"}, 0),
        ("linear", {}, 7),
    ],
)
def test_lr_applied_per_step_is_peak_times_schedule(name: str, args: dict, warmup: int) -> None:
    total, peaks = 40, [0.5, 2.0]
    schedule = build_schedule(name, args, total_steps=total, steps_per_epoch=4, warmup_steps=warmup)
    opt, params = _scalar_sgd(peaks)
    adapter = make_scheduler(opt, schedule)
    for step in range(total):
        before = [p.item() for p in params]
        assert [g["lr"] for g in opt.param_groups] == [peak * schedule(step) for peak in peaks]
        opt.zero_grad()
        torch.stack(list(params)).sum().backward()
        opt.step()
        adapter.step()
        moved = [
            b - p.item() for b, p in zip(before, params, strict=True)
        ]  # what torch really applied
        assert moved == pytest.approx([peak * schedule(step) for peak in peaks], rel=1e-12)
    assert adapter.get_last_lr() == [peak * schedule(total) for peak in peaks]


def test_adapter_observe_cuts_from_the_next_step_and_survives_a_checkpoint() -> None:
    def fresh() -> tuple[ScheduleAdapter, torch.optim.Optimizer]:
        schedule = build_schedule(
            "plateau", {"patience": 0}, total_steps=20, steps_per_epoch=2, warmup_steps=2
        )
        opt, _ = _scalar_sgd([1.0])
        return make_scheduler(opt, schedule), opt

    adapter, opt = fresh()
    assert adapter.monitor == "val/loss"
    for loss in (5.0, 1.0, 2.0):  # at steps 2 (= W, sets best), 4 (better), 6 (worse: cut)
        for _ in range(2):
            opt.step()
            adapter.step()
        adapter.observe(loss)
    assert opt.param_groups[0]["lr"] == 0.1 and adapter.get_last_lr() == [0.1]
    assert adapter.schedule(5) == 1.0 and adapter.schedule(6) == 0.1

    buffer = io.BytesIO()
    torch.save(adapter.state_dict(), buffer)  # the schedule function itself is not pickled
    buffer.seek(0)
    restored, opt2 = fresh()
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.last_epoch == 6 and restored.schedule(6) == 0.1
    opt2.step()
    restored.step()
    assert opt2.param_groups[0]["lr"] == 0.1


def test_observe_is_a_no_op_for_schedules_without_a_monitor() -> None:
    opt, _ = _scalar_sgd([1.0])
    adapter = make_scheduler(opt, build_schedule("constant", {}, total_steps=5, steps_per_epoch=1))
    assert adapter.monitor is None
    adapter.observe(1.0)
    assert opt.param_groups[0]["lr"] == 1.0


def test_lightning_steps_the_adapter_once_per_optimizer_step() -> None:
    lightning = pytest.importorskip("lightning")
    total, peak = 6, 0.3
    schedule = build_schedule("linear", {}, total_steps=total, steps_per_epoch=3, warmup_steps=2)
    seen: list[float] = []

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            seen.append(self.optimizers().param_groups[0]["lr"])
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self) -> dict:
            opt, _ = build_optimizer(self, "sgd", peak, {})
            sched = make_scheduler(opt, schedule)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    trainer = lightning.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(
        Module(), train_dataloaders=torch.utils.data.DataLoader(torch.randn(12, 2), batch_size=4)
    )
    assert seen == [peak * schedule(s) for s in range(total)]
