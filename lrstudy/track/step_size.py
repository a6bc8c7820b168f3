"""The step size an optimizer applies, for the `lr` metric: not always the `lr` it was given.

Prodigy and D-Adaptation keep `lr` as a multiplier of a step size `d` they estimate themselves
(one `d` for all groups, kept in each param group); schedule-free optimizers ramp `lr` up over
their own `warmup_steps`. Read from the param group before the optimizer steps, so the value is
the one that step uses. Duck-typed on the group's keys: a user's own optimizer of these packages
(the plugin) is read the same way as lrstudy's trials. No torch needed.
"""

from __future__ import annotations

from typing import Any

# Group keys the LR-free packages keep as running state, not hyperparameters: never params.
STATE_KEYS = frozenset(
    {"d", "d_max", "d_hat", "d_numerator", "d_denom", "k", "numerator_weighted", "g0_norm",
     "train_mode", "weight_sum", "lr_max", "scheduled_lr", "fsdp_in_use", "log_every",
     "slice_p", "layer_scale"}
)  # fmt: skip


def adapts_step_size(group: dict[str, Any]) -> bool:
    """Prodigy / D-Adaptation: the group holds an estimated `d` and a cap on its growth."""
    return "d" in group and "growth_rate" in group


def applied_lr(group: dict[str, Any]) -> float:
    """The step size this param group's next optimizer step applies.

    Prodigy, D-Adaptation: d * lr (times Adam's bias correction when enabled; DAdaptSGD divides by
    the first gradient's norm, known from its first step on). Schedule-free: lr during its
    warmup ramp, (k + 1) / warmup_steps of it. Any other optimizer: its lr.
    """
    lr = float(group["lr"])
    if adapts_step_size(group):
        lr *= float(group["d"])
        if group.get("use_bias_correction") and "betas" in group:
            beta1, beta2 = group["betas"][:2]
            k = int(group.get("k", 0))
            lr *= (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1))
        g0 = group.get("g0_norm")
        if g0:
            lr /= float(g0)
        return lr
    warmup = group.get("warmup_steps")
    if "train_mode" in group and warmup:
        k = int(group.get("k", 0))
        if k < int(warmup):
            lr *= (k + 1) / int(warmup)
    return lr


def lr_metric_meaning(group: dict[str, Any]) -> str | None:
    """What the `lr` metric means for this group when it is not the given lr (a run tag)."""
    if adapts_step_size(group):
        return "d*lr: the step size the optimizer estimated (lr is a multiplier of it)"
    if "train_mode" in group and group.get("warmup_steps"):
        return "lr after the schedule-free warmup ramp"
    return None
