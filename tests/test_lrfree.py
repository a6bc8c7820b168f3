"""LR-free optimizers (issue 16): the study file, `run`, `find-lr`, the plugin, the step size
logged, schedule-free's evaluation weights, and the one line when the extra is missing.

Real parts throughout: the packages themselves, Lightning, a sqlite MLflow store in a temp dir.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from lrstudy import LRStudyCallback, cli, names
from lrstudy.plan import plan_trials
from lrstudy.spec import parse_spec
from lrstudy.spec.optimizers import LR_FREE
from lrstudy.train.lrfree import recompute_batch_norm

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
name: {name}
task: {{dataset: digits, model: mlp, model_args: {{hidden: [16]}}}}
train: {{epochs: 1, batch_size: 100}}
optimizers:
{optimizers}
seeds: [0]
"""
ALL = "\n".join(f"  - {{name: {n}}}" for n in LR_FREE)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def plugin_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One store for the plugin tests: creating a sqlite store costs seconds; each test has its runs.
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/m.db"


def _trials(client: MlflowClient, experiment: str) -> dict[str, object]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lrstudy.kind` = 'trial'")
    return {r.data.params["optimizer"]: r for r in runs}


def test_lr_defaults_to_the_package_recommendation_and_may_be_swept() -> None:
    spec = parse_spec(
        STUDY.format(name="d", optimizers=ALL + "\n  - {name: prodigy, lr: [0.5, 2]}")
    )
    lrs = sorted((t.optimizer, t.lr) for t in plan_trials(spec))
    assert lrs == sorted(
        [(n, info.default_lr) for n, info in LR_FREE.items()] + [("prodigy", 0.5), ("prodigy", 2.0)]
    )
    assert dict(lrs)["schedulefree_adamw"] == 0.0025


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ("{name: prodigy, d_coef: 0}", "optimizers[0].d_coef: 0 is not allowed: prodigy.d_coef must be a number > 0"),
        ("{name: schedulefree_adamw, warmup_steps: 2.5}", "optimizers[0].warmup_steps: 2.5 is not allowed"),
        ("{name: dadapt_adam, layer_lr: {decay: 0.5}}", "optimizers[0].layer_lr: dadapt_adam does not take 'layer_lr'"),
        ("{name: prodigy, momentum: 0.9}", "optimizers[0].momentum: prodigy does not take 'momentum'; allowed: lr, betas"),
        ("{name: adam, lr: 0.01}\nbaselines: [adam]", "baselines[0]: 'adam' is not allowed: a baseline is an LR-free optimizer"),
    ],
)  # fmt: skip
def test_bad_hyperparameters_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, optimizer: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(STUDY.format(name="bad", optimizers=f"  - {optimizer}"))
    assert cli.main(["run", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"bad.yaml: {message}" in err, err
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("command", ["run", "find-lr"])
def test_without_the_extra_one_line_says_how_to_install_it(tmp_path: Path, command: str) -> None:
    # The package is made unimportable in a fresh interpreter (sys.modules[name] = None is how
    # Python marks a module that must not import): what a user without the extra sees.
    study = tmp_path / "s.yaml"
    study.write_text(
        STUDY.format(name="noextra", optimizers="  - {name: adam, lr: 0.01}")
        + "baselines: [prodigy]\n"
    )
    code = (
        "import sys; sys.modules['prodigyopt'] = None\n"
        "from lrstudy.cli import main\n"
        f"sys.exit(main([{command!r}, {str(study)!r}, '--tracking-uri', 'sqlite:///{tmp_path}/m.db']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert "\n" not in err
    assert (
        "s.yaml: baselines[0]: prodigy needs the prodigyopt package: pip install 'lrstudy[lrfree]'"
        in err
    )
    assert not (tmp_path / "m.db").exists()


def test_each_lr_free_optimizer_runs_and_logs_the_step_size_it_applies(tmp_path: Path) -> None:
    # Three as study optimizers, two as baselines (planned by the study at their defaults).
    grid = [n for n in LR_FREE if n not in ("prodigy", "schedulefree_adamw")]
    optimizers = "\n".join(f"  - {{name: {n}}}" for n in grid) + "\n  - {name: adam, lr: 0.01}"
    study = tmp_path / "all.yaml"
    study.write_text(
        STUDY.format(name="lrfree_all", optimizers=optimizers)
        + f"baselines: [prodigy, schedulefree_adamw]\nreport: {{dir: {tmp_path / 'reports'}}}\n"
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    assert cli.main(["run", str(study), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = _trials(client, "lrfree_all")
    assert set(runs) == {*LR_FREE, "adam"}
    html = (tmp_path / "reports" / "lrfree_all" / "index.html").read_text()
    assert "What tuning the LR buys" in html and "over prodigy at its defaults" in html
    steps = 1437 // 100 * 1  # digits' training split, batch 100, one epoch
    for name, run in runs.items():
        if name == "adam":
            continue
        assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK, name
        assert "population engine does not implement" in run.data.tags[names.TAG_ENGINE_REASON]
        lr = [
            m.value
            for m in sorted(
                client.get_metric_history(run.info.run_id, names.LR), key=lambda m: m.step
            )
        ]
        assert len(lr) == steps, name
        assert float(run.data.params["lr"]) == LR_FREE[name].default_lr  # the nominal lr
        if LR_FREE[name].lr_free == "adaptive":
            # d starts at d0 = 1e-6 and grows: the metric is d * lr, not the nominal 1.0.
            assert lr[0] == pytest.approx(1e-6) and lr[-1] > 10 * lr[0], name
            assert run.data.tags[names.TAG_LR_METRIC].startswith("d*lr")
        else:
            assert lr == [LR_FREE[name].default_lr] * steps


def test_find_lr_runs_each_kind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study = tmp_path / "f.yaml"
    study.write_text(STUDY.format(name="lrfree_find", optimizers=ALL))
    uri = f"sqlite:///{tmp_path}/m.db"
    for name in ("schedulefree_adamw", "prodigy"):
        argv = ["find-lr", str(study), "--optimizer", name, "--steps", "30", "--tracking-uri", uri]
        assert cli.main(argv) == 0, name
    out = capsys.readouterr().out
    assert "schedulefree_adamw" in out and "prodigy" in out
    assert "the ramp moved that multiplier" in out  # prodigy's lr is not a step size


class _Regression(L.LightningModule):
    """A linear model under schedule-free AdamW; records its weights at every validation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=gen)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.at_validation: list[torch.Tensor] = []

    def training_step(self, batch, i):
        return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def validation_step(self, batch, i):
        self.at_validation.append(self.net.weight.detach().clone())
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        import schedulefree

        return schedulefree.AdamWScheduleFree(self.parameters(), lr=0.05)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(data, batch_size=8)

    def val_dataloader(self):
        data = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(data, batch_size=64)


def test_schedule_free_validation_uses_the_averaged_weights(plugin_uri: str) -> None:
    # The tracking callback switches optimizer.eval() before validation and train() after; with
    # that switch removed, validation would see the training sequence y (and the package would
    # refuse to step without train()).
    module = _Regression()
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[LRStudyCallback(study="sf", tracking_uri=plugin_uri, divergence_factor=None)],
    )
    trainer.fit(module)
    (seen,) = module.at_validation
    opt = trainer.optimizers[0]
    opt.eval()  # x: the average the package evaluates
    x = module.net.weight.detach().clone()
    opt.train()  # y: where gradients are taken
    y = module.net.weight.detach().clone()
    assert not torch.allclose(x, y)  # otherwise the test could not tell them apart
    assert torch.equal(seen, x)
    opt.eval()
    assert torch.equal(module.net.weight, x)  # and fit leaves the averaged model, as evaluated


def test_batch_norm_statistics_are_recomputed_on_the_given_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).eval()
    batches = [torch.randn(20, 3) + 5 for _ in range(4)]
    assert recompute_batch_norm(model, batches) == 4
    bn = model[1]
    with torch.no_grad():
        h = torch.cat([model[0](b) for b in batches])
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not model.training  # put back as they were


class _Plugin(_Regression):
    """A user's module with one of the LR-free optimizers of its own choosing."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def configure_optimizers(self):
        from lrstudy.train.optim import build_optimizer

        return build_optimizer(self, self.name, LR_FREE[self.name].default_lr, {})[0]


@pytest.mark.parametrize("name", sorted(LR_FREE))
def test_the_plugin_trains_each_and_logs_the_step_size(plugin_uri: str, name: str) -> None:
    callback = LRStudyCallback(
        study="plugin_lrfree", tracking_uri=plugin_uri, divergence_factor=None
    )
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[callback])  # fmt: skip
    trainer.fit(_Plugin(name))
    client = MlflowClient(plugin_uri)
    run = client.get_run(callback.run_id)
    lr = [m.value for m in sorted(client.get_metric_history(callback.run_id, names.LR),
                                  key=lambda m: m.step)]  # fmt: skip
    assert len(lr) == 16 and run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK
    assert float(run.data.params["lr"]) == LR_FREE[name].default_lr  # the nominal lr, a param
    assert not any(k in run.data.params for k in ("opt.d", "opt.k", "opt.train_mode"))  # state
    if LR_FREE[name].lr_free == "adaptive":
        assert lr[0] == pytest.approx(1e-6) and lr[-1] != lr[0]  # d * lr as d adapts
    else:
        assert lr == [LR_FREE[name].default_lr] * 16


class _WithBatchNorm(_Regression):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)
        )

    def forward(self, x):  # what the BatchNorm recomputation runs
        return self.net(x)

    def validation_step(self, batch, i):
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))


def test_batch_norm_statistics_are_those_of_the_averaged_weights(plugin_uri: str) -> None:
    from lrstudy.train.lrfree import ScheduleFreeSwitch

    module = _WithBatchNorm()
    halves = [module.x[:32], module.x[32:]]
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0,
                        callbacks=[LRStudyCallback(study="sf_bn", tracking_uri=plugin_uri,
                                                   divergence_factor=None),
                                   ScheduleFreeSwitch(bn_inputs=lambda: halves)])  # fmt: skip
    trainer.fit(module)  # ends in eval mode: the parameters are x, the average
    with torch.no_grad():
        h = module.net[0](module.x)  # BatchNorm's input under x
    bn = module.net[1]
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in
                          (h[:32], h[32:])]).mean(0), atol=1e-5)  # fmt: skip
