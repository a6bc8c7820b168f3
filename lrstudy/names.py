"""Metric, param and tag names shared by the writer (track) and the reader (analyze).

Keep every name that crosses the MLflow boundary here, so the two sides cannot drift.
"""

from __future__ import annotations

# Per optimizer step (step = optimizer step index, 0-based)
LR = "lr"  # one param group; with several groups: "lr/<group>"
MOMENTUM = "momentum"  # momentum (SGD/RMSprop) or beta1 (Adam family); "momentum/<group>" likewise
WEIGHT_DECAY = "weight_decay"  # "weight_decay/<group>" likewise (plugin only logs it when non-zero)
TRAIN_LOSS = "train/loss"  # per step: the training loss of that batch
GRAD_NORM = "train/grad_norm"

# Per epoch (step = global optimizer step at the end of that epoch)
TRAIN_LOSS_EPOCH = "train/loss_epoch"  # mean over the epoch
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
EPOCH = "epoch"
EPOCH_SECONDS = "epoch/seconds"

# Once, at the end of a trial
FINAL_VAL_ACC = "final/val_acc"
BEST_VAL_ACC = "best/val_acc"
FINAL_TRAIN_LOSS = "final/train_loss"
FINAL_TRAIN_ACC = "final/train_acc"
STEPS_TO_TARGET = "steps_to_target"  # absent when the target was never reached
TRAIN_SECONDS = "train/seconds"
NOISE_ACC_PREFIX = "robust/acc_noise_"  # + sigma, e.g. "robust/acc_noise_0.1"

# Range test runs (kind=range_test)
RT_LOSS = "loss"
RT_SMOOTHED = "smoothed_loss"
RT_SUGGESTION_PREFIX = "suggestion/"  # + rule name, e.g. "suggestion/valley" (logged at step 0)
TAG_RANGE_TEST_KEY = "lrstudy.range_test_key"  # hash of everything the test's result depends on
PARAM_OPTIMIZER = "optimizer"
PARAM_SUGGESTION = "suggestion"  # name of the recommended rule; its LR is metric suggestion/<rule>
PARAM_LR_MIN = "lr_min"
PARAM_LR_MAX = "lr_max"
PARAM_STEPS = "steps"
PARAM_MODE = "mode"
FIGURE_ARTIFACT = "range_test.png"

# Tags
TAG_STUDY = "lrstudy.study"
TAG_KIND = "lrstudy.kind"  # "study" (parent), "trial" (child), "range_test", "plugin"
TAG_TRIAL_KEY = "lrstudy.trial_key"
TAG_CONFIG_KEY = "lrstudy.config_key"  # trial key without the seed: groups seeds of a config
TAG_SPEC_HASH = "lrstudy.spec_hash"
# Successive halving: `lrstudy.rung.<epoch>` holds the decision taken at that rung (JSON, see
# track/rungs.py); a stopped trial says at which rung and step it stopped.
TAG_RUNG_PREFIX = "lrstudy.rung."
TAG_PRUNED_RUNG = "lrstudy.pruned_rung"
TAG_PRUNED_STEP = "lrstudy.pruned_step"
# TPE: each slot's id on each of its runs, and the configuration sampled for it (JSON, see
# execute/tpe.py `Sampled`), which the report's Search section reads.
TAG_TPE_SLOT = "lrstudy.tpe_slot"
TAG_SAMPLED = "lrstudy.sampled"
TAG_VERSION = "lrstudy.version"
TAG_OUTCOME = "lrstudy.outcome"  # one of the OUTCOME_* values below
TAG_DIAGNOSIS = "lrstudy.diagnosis"  # too_low / good / too_high / at_chance / diverged (report)
TAG_DIVERGED_AT = "lrstudy.diverged_at_step"
TAG_DIVERGED_REASON = "lrstudy.diverged_reason"
TAG_PID = "lrstudy.pid"
TAG_OWNER = "lrstudy.owner"  # the worker holding a claim: host:pid:random
TAG_CLAIM = "lrstudy.claim"  # "pending" while a claim is being resolved, then "won"
TAG_HEARTBEAT = "lrstudy.heartbeat"  # epoch seconds of the owner's last heartbeat (lease)
TAG_ENGINE = "lrstudy.engine"  # which engine trained the trial: "trial" or "population"
# Which population trained it (an id shared by its members, newcomers in freed slots included)
TAG_POPULATION = "lrstudy.population"
TAG_EXECUTOR = "lrstudy.executor"  # "local" or "ray"
TAG_HOST = "lrstudy.host"
TAG_ERROR = "lrstudy.error"
TAG_DEVICE = "lrstudy.device"  # where training ran, e.g. "cpu" or "cuda:0"
TAG_PARAM_GROUPS = "lrstudy.param_groups"  # comma-separated group names, in order
TAG_LR_SOURCE = "lrstudy.lr_source"  # "spec" or "range_test:<suggestion>" for lr: auto
# What ranks configurations (parent and trial runs): a metric name as logged, and max/min.
# Absent on runs written before it: then val/acc, max (what every study ranked by until then).
TAG_METRIC = "lrstudy.metric"
TAG_METRIC_MODE = "lrstudy.metric_mode"
TAG_TASK_KIND = "lrstudy.task_kind"  # "reference", "model" (user nn.Module), "module" (Lightning)
# A user class's source: sha256 of the files defining the task's classes (plan warns on change).
TAG_CODE_HASH = "lrstudy.code_hash"
# The study replaced the module's own configure_optimizers (its optimizer and schedule).
TAG_OPTIMIZER_REPLACED = "lrstudy.optimizer_replaced"
TAG_LR_METRIC = "lrstudy.lr_metric"  # what `lr` logs when not the given lr (Prodigy: d*lr)
TAG_ENGINE_REASON = "lrstudy.engine_reason"  # why a trial ran on the trial engine, not a population
# Plugin runs (LRStudyCallback): JSON list of param names a user passed that count as configuration.
TAG_CONFIG_PARAMS = "lrstudy.config_params"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own nesting tag
RUN_NAME = "mlflow.runName"
# MLflow 3's UI opens an experiment in its GenAI view unless this experiment tag says otherwise.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

KIND_STUDY = "study"
KIND_TRIAL = "trial"
KIND_RANGE_TEST = "range_test"
KIND_PLUGIN = "plugin"

OUTCOME_OK = "ok"
OUTCOME_DIVERGED = "diverged"
OUTCOME_FAILED = "failed"
OUTCOME_KILLED = "killed"
OUTCOME_RUNNING = "running"
# Stopped early by successive halving at a rung: FINISHED, done (a rerun does not redo it), and
# neither failed nor diverged. Only a halving study plans keys that can end this way.
OUTCOME_PRUNED = "pruned"
# Outcomes that finish a key: its trial is not run again.
DONE_OUTCOMES = (OUTCOME_OK, OUTCOME_DIVERGED, OUTCOME_PRUNED)

# MLflow's per-call limits (its REST API refuses more).
MLFLOW_MAX_METRICS_PER_BATCH = 1000
MLFLOW_MAX_PARAMS_PER_BATCH = 100
MLFLOW_MAX_RESULTS = 1000  # runs per search_runs page

SPEC_ARTIFACT = "study.yaml"  # resolved spec, artifact of the parent run
REPORT_ARTIFACT = "report/index.html"


def group_metric(base: str, group: str | None, n_groups: int) -> str:
    """Metric name for a per-param-group value: bare when there is one group."""
    return base if n_groups <= 1 or group is None else f"{base}/{group}"
