"""Keys pinned to literal values: a finished trial must still count after an lrstudy upgrade.

Resume asks MLflow which trial keys are finished, `lr: auto` reuses a range test by its key, and
the report groups seeds by config key. A refactor that changed any of these hashes (the JSON
encoding, a settings field, the LR grid rounding, the random-search draws, the ramp defaults)
would silently rerun every user's study, so these values were computed once and written down.
Never update a value here to make a test pass; change the code back instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lrstudy.keys import stable_hash
from lrstudy.plan import plan_trials
from lrstudy.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = (ROOT / "studies" / "smoke.yaml").read_text()

# layer_lr (both forms), warmup (fraction and steps), schedule args, every sweep axis but
# weight_decay, integer seeds, noise evaluation and random search with a log-uniform LR range.
KEYS_STUDY = """
name: keys
task:
  dataset: mnist1d
  model: mlp
  model_args: {hidden: [32, 16]}
  data_args: {num_samples: 600}
train:
  epochs: 3
  batch_size: 50
  target: {metric: val/loss, value: 1.5}
optimizers:
  - name: momentum
    lr: {low: 1e-4, high: 1.0}
    layer_lr: {decay: 0.5}
  - name: adamw
    lr: [1e-3, 3e-3]
    layer_lr: [0.25, 0.5, 1.0]
    weight_decay: 0.05
schedules:
  - name: cosine
    warmup: 0.1
  - name: step
    warmup: 3
    every: 1
    gamma: 0.5
seeds: 2
sweep: {batch_size: [25, 50], momentum: [0.8, 0.9], train_fraction: [0.5, 1.0]}
search: {method: random, trials: 6, seed: 7}
evaluate: {noise: [0.1]}
"""


def _keys(trials) -> dict[str, tuple[str, str]]:
    return {t.name: (t.key, t.config_key) for t in trials}


def test_smoke_study_keys() -> None:
    assert _keys(plan_trials(load_spec(ROOT / "studies" / "smoke.yaml"))) == {
        "sgd lr=0.05 constant seed=0": ("620eea401ea63efa", "c96d61f57d043a7b"),
        "sgd lr=0.05 constant seed=1": ("fce147de6e2a14d4", "c96d61f57d043a7b"),
        "sgd lr=50 constant seed=0": ("55027ba55a00a952", "236125d628b2f040"),
        "sgd lr=50 constant seed=1": ("2581c6e9abbb3442", "236125d628b2f040"),
        "sgd lr=0.05 cosine+warmup seed=0": ("3fe814079304d15d", "1505e5951c319a71"),
        "sgd lr=0.05 cosine+warmup seed=1": ("a31ee1968b6b64d3", "1505e5951c319a71"),
        "sgd lr=50 cosine+warmup seed=0": ("f4f94351c37dc921", "2ebab28eb108b4d1"),
        "sgd lr=50 cosine+warmup seed=1": ("8fdf3d387293ae62", "2ebab28eb108b4d1"),
        "adam lr=0.001 constant seed=0": ("a06fa6c30065fde3", "3a2b0503c9c2840f"),
        "adam lr=0.001 constant seed=1": ("89b29dc9d549672c", "3a2b0503c9c2840f"),
        "adam lr=0.001 cosine+warmup seed=0": ("7a9f786c06de53a7", "e8d39ede1ce618a3"),
        "adam lr=0.001 cosine+warmup seed=1": ("6e137b0ae4703736", "e8d39ede1ce618a3"),
    }


def test_quickstart_study_keys() -> None:
    trials = plan_trials(load_spec(ROOT / "studies" / "quickstart.yaml"))
    keys = _keys(trials)
    assert len(keys) == 48
    assert keys["sgd lr=0.001 constant seed=0"] == ("a2befc578f8967a8", "6c3203e6ce5951c1")
    assert keys["sgd lr=0.00314 constant seed=1"] == ("0c6cd14eeba10c14", "d6cd0c82a8219bfe")
    assert keys["sgd lr=3 cosine+warmup seed=1"] == ("3448ec826a7c0145", "f9b6744a519785b5")
    assert keys["adam lr=0.0001 constant seed=1"] == ("6d25c7973ceb41ef", "59a382379c8d4e91")
    assert keys["adam lr=0.1 cosine+warmup seed=1"] == ("ea57e064e96d26aa", "0d61ef749e68cb2a")
    # Every other key, in plan order, through one fingerprint of all 48.
    every = " ".join(t.key for t in trials)
    assert hashlib.sha256(every.encode()).hexdigest()[:16] == "46d741173310fb9c"
    every_config = " ".join(t.config_key for t in trials)
    assert hashlib.sha256(every_config.encode()).hexdigest()[:16] == "bc2b9514fc57e5d7"


def test_random_search_layer_lr_warmup_study_keys() -> None:
    assert _keys(plan_trials(parse_spec(KEYS_STUDY))) == {
        "adamw lr=0.003 cosine+warmup bs=25 mom=0.8 frac=0.5 seed=0": (
            "e7fc5739092376c9",
            "42f6bf7530410e80",
        ),
        "adamw lr=0.003 cosine+warmup bs=25 mom=0.8 frac=0.5 seed=1": (
            "1893e600b95222cc",
            "42f6bf7530410e80",
        ),
        "adamw lr=0.001 cosine+warmup bs=25 mom=0.8 frac=1 seed=0": (
            "4b574a49a527daca",
            "66ba020e6495753b",
        ),
        "adamw lr=0.001 cosine+warmup bs=25 mom=0.8 frac=1 seed=1": (
            "ee2e9a50766cc0c3",
            "66ba020e6495753b",
        ),
        "adamw lr=0.001 cosine+warmup bs=25 mom=0.9 frac=0.5 seed=0": (
            "ed647a648db946ac",
            "e67683572f00ab55",
        ),
        "adamw lr=0.001 cosine+warmup bs=25 mom=0.9 frac=0.5 seed=1": (
            "64e19cf03961b864",
            "e67683572f00ab55",
        ),
        "momentum lr=0.0333 cosine+warmup bs=25 mom=0.9 frac=0.5 seed=0": (
            "fb4df1deefb423ad",
            "134088571254bf70",
        ),
        "momentum lr=0.0333 cosine+warmup bs=25 mom=0.9 frac=0.5 seed=1": (
            "e19cc0ee4e04c2f0",
            "134088571254bf70",
        ),
        "momentum lr=0.0169 cosine+warmup bs=25 mom=0.9 frac=1 seed=0": (
            "c1db1ac470b1abec",
            "6ac486a1280a05b9",
        ),
        "momentum lr=0.0169 cosine+warmup bs=25 mom=0.9 frac=1 seed=1": (
            "0bb9aadcf1eeb741",
            "6ac486a1280a05b9",
        ),
        "momentum lr=0.0192 cosine+warmup bs=25 mom=0.8 frac=0.5 seed=0": (
            "71657aede9663ee4",
            "53f586684398f410",
        ),
        "momentum lr=0.0192 cosine+warmup bs=25 mom=0.8 frac=0.5 seed=1": (
            "c4c0a9e1019bf727",
            "53f586684398f410",
        ),
    }


def test_lr_auto_trial_keys() -> None:
    trials = plan_trials(parse_spec(SMOKE.replace("lr: 1e-3", "lr: auto")))
    assert {k: v for k, v in _keys(trials).items() if k.startswith("adam")} == {
        "adam lr=auto constant seed=0": ("ea60952e5ec8d0c0", "003586d78eb9fac3"),
        "adam lr=auto constant seed=1": ("ec0ba6c7db53d9e1", "003586d78eb9fac3"),
        "adam lr=auto cosine+warmup seed=0": ("c1b3bacecc45a803", "fe482e4030befd2b"),
        "adam lr=auto cosine+warmup seed=1": ("647e3984a6df4def", "fe482e4030befd2b"),
    }


@pytest.mark.parametrize(
    ("text", "trial", "key"),
    [
        (SMOKE, "sgd lr=0.05 constant seed=0", "143f6cd649c7e64b"),
        (SMOKE.replace("lr: 1e-3", "lr: auto"), "adam lr=auto constant seed=0", "bd567a6f137750db"),
        (
            KEYS_STUDY,
            "adamw lr=0.003 cosine+warmup bs=25 mom=0.8 frac=0.5 seed=0",
            "b8538abd05f7b76c",
        ),
    ],
)
def test_range_test_settings_key_with_the_default_ramp(text: str, trial: str, key: str) -> None:
    # Computed as log_result and auto_lr do: the default ramp, hashed with stable_hash. These
    # change only with RULES_VERSION (now 2: the geomean and edge_div3 rules, a flat-curve fallback), on purpose: a range
    # test logged under other rules must not be reused.
    from lrstudy.rangetest.study import range_test_settings

    spec = parse_spec(text)
    (found,) = [t for t in plan_trials(spec) if t.name == trial]
    assert stable_hash(range_test_settings(spec, found)) == key


@pytest.mark.parametrize(
    ("text", "spec_hash"),
    [
        ((ROOT / "studies" / "quickstart.yaml").read_text(), "57a5e4b399e1"),
        (SMOKE, "1439dfed5d4a"),
        (KEYS_STUDY, "f516cd528755"),
    ],
)
def test_spec_hash(text: str, spec_hash: str) -> None:
    assert parse_spec(text).spec_hash() == spec_hash


def test_user_class_study_keys() -> None:
    # Keys of studies of a user's classes hash class paths and init args (issue 13): pinned too,
    # so a user's finished trials still count after an upgrade.
    spec = parse_spec(
        """
name: ownkeys
task:
  module: {class_path: userpkg.lit.LitNet, init_args: {hidden: 16}}
  datamodule: {class_path: userpkg.data.BlobData, init_args: {n: 256}}
  param_groups: {body: [body.], head: [head.]}
train: {epochs: 2}
optimizers: [{name: sgd, lr: [0.05, 0.2], momentum: 0.9}]
sweep: {batch_size: [16, 32]}
"""
    )
    assert _keys(plan_trials(spec)) == {
        "sgd lr=0.05 constant bs=16 seed=0": ("b3fe2ec229607e28", "8aa00c21d203e1a9"),
        "sgd lr=0.05 constant bs=32 seed=0": ("aeb651d4e44f89c7", "569b78f584add0ff"),
        "sgd lr=0.2 constant bs=16 seed=0": ("2a07961f415d16a4", "766b22cb920a50d2"),
        "sgd lr=0.2 constant bs=32 seed=0": ("b3c163534a00a7c5", "b90b748e0ebac79f"),
    }
    assert spec.spec_hash() == "ba8277f03e1c"
    spec = parse_spec(
        """
name: ownkeys2
task:
  model: {class_path: userpkg.nets.Net, init_args: {width: 16}}
  dataset: {class_path: userpkg.data.Regression, init_args: {n: 200}}
  loss: {class_path: torch.nn.HuberLoss, init_args: {delta: 0.5}}
train: {epochs: 2, batch_size: 25}
optimizers: [{name: adam, lr: 0.01}]
"""
    )
    assert _keys(plan_trials(spec)) == {
        "adam lr=0.01 constant seed=0": ("c5101fda5f333619", "0c71dfdc8659e1a0")
    }
    assert spec.spec_hash() == "ca26242d5292"


# Every optimizer of the catalogue (lrstudy/spec/optimizers.py OPTIMIZERS) at two LRs with its
# defaults: a key hashes the resolved optimizer settings, so a changed default in the catalogue
# (say, to follow a new torch default) would rerun every finished trial of that optimizer.
ALL_OPTIMIZERS_STUDY = """
name: allopt
task:
  dataset: mnist1d
  model: mlp
  model_args: {hidden: [32]}
  data_args: {num_samples: 600}
train:
  epochs: 2
  batch_size: 50
optimizers:
  - name: sgd
    lr: [0.01, 0.1]
  - name: momentum
    lr: [0.01, 0.1]
  - name: nesterov
    lr: [0.01, 0.1]
  - name: adagrad
    lr: [0.01, 0.1]
  - name: adadelta
    lr: [0.01, 0.1]
  - name: rmsprop
    lr: [0.01, 0.1]
  - name: adam
    lr: [0.01, 0.1]
  - name: adamw
    lr: [0.01, 0.1]
  - name: nadam
    lr: [0.01, 0.1]
  - name: radam
    lr: [0.01, 0.1]
  - name: schedulefree_adamw
    lr: [0.5, 1.0]
  - name: schedulefree_sgd
    lr: [0.5, 1.0]
  - name: prodigy
    lr: [0.5, 1.0]
  - name: dadapt_adam
    lr: [0.5, 1.0]
  - name: dadapt_sgd
    lr: [0.5, 1.0]
seeds: [0]
"""


def test_every_optimizer_keys_and_the_population_engine() -> None:
    from lrstudy.spec.optimizers import OPTIMIZERS
    from lrstudy.train.population.grouping import check_population

    trials = plan_trials(parse_spec(ALL_OPTIMIZERS_STUDY))
    assert {t.optimizer for t in trials} == set(OPTIMIZERS)  # a new optimizer gets pinned too
    assert _keys(trials) == {
        "sgd lr=0.01 constant seed=0": ("5706a67d3890958d", "7b0390791a107875"),
        "sgd lr=0.1 constant seed=0": ("a6e334ec5c2d79de", "bd494d3f92bd1389"),
        "momentum lr=0.01 constant seed=0": ("4eab4dc6e862218c", "17dd1edcc6267026"),
        "momentum lr=0.1 constant seed=0": ("cc1b760e1c564413", "6c9ff8524b2a3279"),
        "nesterov lr=0.01 constant seed=0": ("e097fe4ba36c23ab", "5e92f2910211eb46"),
        "nesterov lr=0.1 constant seed=0": ("c627ea37d971a234", "cbf6bd892d1507e4"),
        "adagrad lr=0.01 constant seed=0": ("e682fb7d1f5f6e4b", "0077ccbd480649cd"),
        "adagrad lr=0.1 constant seed=0": ("1b17b64551bc315d", "fd873e1dd28a5de1"),
        "adadelta lr=0.01 constant seed=0": ("644026ef0a3c67a9", "f5360cb7978c6bd9"),
        "adadelta lr=0.1 constant seed=0": ("7377e9ffd45dd3dd", "1667ce4f4fb8b5c4"),
        "rmsprop lr=0.01 constant seed=0": ("267ee4f52895b2ac", "6f943ce773deef4a"),
        "rmsprop lr=0.1 constant seed=0": ("235b59df3c5aaa69", "0f522a8f06bb08da"),
        "adam lr=0.01 constant seed=0": ("d24d9c3c6a090493", "2bc73710ef185e1c"),
        "adam lr=0.1 constant seed=0": ("87d48e68d08e3b91", "11158ddc164200cf"),
        "adamw lr=0.01 constant seed=0": ("4aac7de9f97f5761", "ef6c9d8ff46dbb88"),
        "adamw lr=0.1 constant seed=0": ("6eb1cb83612b096a", "32e00f792aff2ac5"),
        "nadam lr=0.01 constant seed=0": ("cc354c079428ba6b", "c806af61a846820f"),
        "nadam lr=0.1 constant seed=0": ("7ddac34ac8fd5531", "c9da3251ccbecd2c"),
        "radam lr=0.01 constant seed=0": ("2f506bde68bcf8e7", "867d8fa0c10d477a"),
        "radam lr=0.1 constant seed=0": ("f8a1b75638f32695", "e4770a9075154292"),
        # LR-free optimizers (issue 16; extra lrstudy[lrfree]): lr is a multiplier here.
        "schedulefree_adamw lr=0.5 constant seed=0": ("14e1793f9caaeb36", "debce96b9272201c"),
        "schedulefree_adamw lr=1 constant seed=0": ("204b7b9b1985dd17", "1470aaf8ad15df00"),
        "schedulefree_sgd lr=0.5 constant seed=0": ("bc4101e296a67d6b", "5ccd0570e52aaba7"),
        "schedulefree_sgd lr=1 constant seed=0": ("37aee0e4904018dd", "da59e3a0b67b2078"),
        "prodigy lr=0.5 constant seed=0": ("a27f3f718274f788", "3a9e6467c173f683"),
        "prodigy lr=1 constant seed=0": ("4bee1ea010556d88", "e1e5fd705c307c4c"),
        "dadapt_adam lr=0.5 constant seed=0": ("23ef5372c35560ac", "5d4eaabbeb197149"),
        "dadapt_adam lr=1 constant seed=0": ("a21c8d97ad5f7dbf", "b0b0a053730b7d8a"),
        "dadapt_sgd lr=0.5 constant seed=0": ("d988af6c37f68b97", "613591236751b817"),
        "dadapt_sgd lr=1 constant seed=0": ("80537ebae57554e1", "c0a76a6c5e120a44"),
    }
    # The same study on the population engine (`--engine auto`, the default, which groups the two
    # LRs of each optimizer into one population): keys are computed by the plan, before and
    # whatever an engine is chosen, so a population member logs exactly the key above.
    for name in OPTIMIZERS:
        members = [t for t in trials if t.optimizer == name]
        if OPTIMIZERS[name].lr_free:  # the trial engine runs them, with the reason stated
            with pytest.raises(ValueError, match="population engine does not implement"):
                check_population(members)
        else:
            check_population(members)


def test_baselines_keep_every_grid_key_and_pin_their_own() -> None:
    # baselines: (issue 16) adds trials at the packages' defaults over the study's seeds; the
    # grid's keys are those of the same study without it (adam lr=0.01 seed 0 as pinned above).
    head = ALL_OPTIMIZERS_STUDY.split("optimizers:")[0]
    spec = parse_spec(
        head + "optimizers: [{name: adam, lr: 0.01}]\nbaselines: [prodigy, schedulefree_adamw]\n"
        "seeds: [0, 1]\n"
    )
    assert _keys(plan_trials(spec)) == {
        "adam lr=0.01 constant seed=0": ("d24d9c3c6a090493", "2bc73710ef185e1c"),
        "adam lr=0.01 constant seed=1": ("855b15c39a116768", "2bc73710ef185e1c"),
        "prodigy lr=1 constant seed=0": ("4bee1ea010556d88", "e1e5fd705c307c4c"),
        "prodigy lr=1 constant seed=1": ("9676d98c79365f9d", "e1e5fd705c307c4c"),
        "schedulefree_adamw lr=0.0025 constant seed=0": ("3ced3847d430a796", "38080763cfde81fa"),
        "schedulefree_adamw lr=0.0025 constant seed=1": ("8a3aab13f167007d", "38080763cfde81fa"),
    }
    assert spec.spec_hash() == "0533dca38b15"
