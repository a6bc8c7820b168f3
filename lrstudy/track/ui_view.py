"""Links into MLflow's own UI that open a study the way lrstudy means it to be read.

What MLflow 3.17's UI reads (from the bundle in the mlflow wheel, `server/js/build/static/js/`):

* The experiment page's kind follows a per-browser *workflow type*: localStorage key
  `mlflow.workflowType_v1` (JSON string, default `"genai"`), overridden by the URL query
  `workflowType=machine_learning` (or `genai`). The `mlflow.experimentKind` experiment tag is read
  only behind a feature flag that is always on in 3.17, so the tag alone opens the GenAI overview.
* The runs table takes its search facets from the URL query: `searchFilter`, `orderByKey`,
  `orderByAsc`, `startTime`, `lifecycleFilter`, `modelVersionFilter`, `datasetsFilter`. Columns
  (`selectedColumns`, `columnOrder`, `columnWidths`) live in per-browser UI state, except when the
  URL carries `viewStateShareKey=<id>`: then the UI loads facets *and* columns from the experiment tag
  `mlflow.sharedViewState.<id>` (a "saved view", also listed under the page's "Views" menu). A saved
  view is ignored when the URL also carries any search facet.
* A saved view's tag value is an envelope `{"name", "createdAt", "updatedAt", "state"}` whose
  `state` is the JSON text of the facets and UI state; the UI's own "Save view" writes the same.
* Column ids are `<attributes|params|metrics|tags>.` + the key in backticks; the run-name column is
  `attributes.`Run Name`` (190 px unless `columnWidths` says otherwise), the date/status column
  `runDateAndNestInfo`. The status icon there follows the MLflow run status only (FINISHED: green
  check, FAILED/KILLED: red cross), so a diverged trial (FINISHED, outcome diverged) needs a column.
* The run's colour dot (table and charts) is the run tag `mlflow.runColor` when present.

Everything here is pure except `ensure_study_view` (writes one experiment tag). Starting a local
`mlflow ui` is `ui_server`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from lrstudy import names

WORKFLOW_PARAM = "workflowType"
WORKFLOW_TRAINING = "machine_learning"
SHARE_PARAM = "viewStateShareKey"
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SEARCH_FACETS = (
    "searchFilter",
    "orderByKey",
    "orderByAsc",
    "startTime",
    "lifecycleFilter",
    "modelVersionFilter",
    "datasetsFilter",
)
RUN_NAME_COLUMN = "attributes.`Run Name`"
DATE_COLUMN = "runDateAndNestInfo"
VIEW_NAME_PREFIX = "lrstudy: "
MAX_ENVELOPE_CHARS = 20_000  # the UI refuses to save larger views


def column(kind: str, key: str) -> str:
    """The runs table's column id for a param, metric, tag or attribute: ``metrics.`val/acc```."""
    if kind not in ("attributes", "params", "metrics", "tags"):
        raise ValueError(f"column kind {kind!r}: one of attributes, params, metrics, tags")
    return f"{kind}.`{key}`"


# The default columns of a study view, in order: outcome and result first, then what was varied,
# then the rest of the result. (Params and tags are columns only once some run has them.)
STUDY_COLUMNS: tuple[str, ...] = (
    column("tags", names.TAG_OUTCOME),
    column("metrics", names.FINAL_VAL_ACC),
    column("tags", names.TAG_DIAGNOSIS),
    column("params", "optimizer"),
    column("params", "lr"),
    column("params", "schedule_label"),
    column("params", "seed"),
    column("metrics", names.BEST_VAL_ACC),
    column("metrics", names.FINAL_TRAIN_LOSS),
    column("metrics", names.STEPS_TO_TARGET),
)
NAME_WIDTH_MIN, NAME_WIDTH_MAX = 190, 480  # 190 px: the UI's default, ~20 characters of a name
NAME_WIDTH_DEFAULT = 290
COLUMN_WIDTHS: dict[str, int] = {
    column("tags", names.TAG_OUTCOME): 125,
    column("metrics", names.FINAL_VAL_ACC): 110,
    column("tags", names.TAG_DIAGNOSIS): 130,
    column("params", "optimizer"): 90,
    column("params", "lr"): 80,
    column("params", "schedule_label"): 130,
    column("params", "seed"): 60,
    column("metrics", names.BEST_VAL_ACC): 110,
    column("metrics", names.FINAL_TRAIN_LOSS): 120,
    column("metrics", names.STEPS_TO_TARGET): 120,
}


def base_url(url: str) -> str:
    """``http://host:port[/prefix]`` without a trailing slash, query or fragment."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def is_server_uri(uri: str) -> bool:
    """A tracking server (whose own UI we link to) rather than a store we open ourselves."""
    return uri.strip().lower().startswith(("http://", "https://"))


def _hash_url(base: str, route: str, query: Mapping[str, str]) -> str:
    q = urlencode(dict(query), safe="`/:=")
    return f"{base_url(base)}/#{route}" + (f"?{q}" if q else "")


def experiments_url(base: str) -> str:
    """The experiment list, in the model-training workflow."""
    return _hash_url(base, "/experiments", {WORKFLOW_PARAM: WORKFLOW_TRAINING})


def runs_view_url(
    base: str,
    experiment_id: str,
    *,
    view_key: str | None = None,
    search_filter: str | None = None,
    order_by: str | None = None,
    ascending: bool = False,
) -> str:
    """URL of an experiment's model-training runs table.

    With `view_key` the table opens the saved view `mlflow.sharedViewState.<view_key>` (columns,
    widths, filter and sort, see `study_view_state`); search facets cannot be combined with it,
    because the UI ignores a saved view when the URL carries any. Without it, `search_filter` and
    `order_by` (a column id, e.g. ``column("metrics", "final/val_acc")``) go in the URL, and columns
    are whatever this browser last chose.
    """
    if not str(experiment_id).strip():
        raise ValueError("experiment_id is empty")
    query = {WORKFLOW_PARAM: WORKFLOW_TRAINING}
    if view_key is not None:
        if search_filter or order_by:
            raise ValueError("a saved view carries its own filter and order; pass one or the other")
        query[SHARE_PARAM] = view_key
    else:
        if search_filter:
            query["searchFilter"] = search_filter
        if order_by:
            query["orderByKey"] = order_by
            query["orderByAsc"] = "true" if ascending else "false"
    return _hash_url(base, f"/experiments/{experiment_id}/runs", query)


def _quote(value: str) -> str | None:
    """A string literal for an MLflow search filter, or None when it cannot be written as one."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def trials_filter(study: str | None = None) -> str:
    """Search filter for the trial runs (of one study): a flat list, parents left out."""
    parts = [f"tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}'"]
    quoted = _quote(study) if study is not None else None
    if quoted is not None:
        parts.append(f"tags.`{names.TAG_STUDY}` = {quoted}")
    return " AND ".join(parts)


def view_key(study: str | None) -> str:
    """Stable saved-view id of a study (or of all trials): URL- and tag-key-safe, unique per name."""
    if not study:
        return "lrstudy-trials"
    slug = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-")[:40] or "study"
    digest = hashlib.sha256(study.encode()).hexdigest()[:8]
    return f"lrstudy-{slug}-{digest}"


def name_column_width(run_names: Sequence[str]) -> int:
    """Pixels for the run-name column to show the longest name whole (colour dot and padding
    included), between the UI's own 190 and 480."""
    longest = max((len(n) for n in run_names), default=0)
    if not longest:
        return NAME_WIDTH_DEFAULT
    return max(NAME_WIDTH_MIN, min(NAME_WIDTH_MAX, 48 + 7 * longest))


def study_view_state(
    study: str | None,
    *,
    run_names: Sequence[str] = (),
    columns: Sequence[str] = STUDY_COLUMNS,
    widths: Mapping[str, int] | None = None,
    order_by: str = column("metrics", names.FINAL_VAL_ACC),
    ascending: bool = False,
) -> dict[str, Any]:
    """The runs-table state of a study view: its trials, best final val acc first, with outcome,
    results and the varied settings as columns, and a run-name column wide enough for `run_names`.
    """
    widths = {**(COLUMN_WIDTHS if widths is None else widths)}
    widths[RUN_NAME_COLUMN] = name_column_width(run_names)
    return {
        "searchFilter": trials_filter(study),
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": list(columns),
        "columnOrder": [RUN_NAME_COLUMN, DATE_COLUMN, *columns],
        "columnWidths": {k: v for k, v in widths.items() if k == RUN_NAME_COLUMN or k in columns},
    }


def view_envelope(name: str, state: Mapping[str, Any], *, created_ms: int, updated_ms: int) -> str:
    """The experiment-tag value of a saved view (the format the UI's "Save view" writes)."""
    envelope = json.dumps(
        {
            "name": name,
            "createdAt": int(created_ms),
            "updatedAt": int(updated_ms),
            "state": json.dumps(dict(state), separators=(",", ":")),
        },
        separators=(",", ":"),
    )
    if len(envelope) > MAX_ENVELOPE_CHARS:
        raise ValueError(f"saved view {name!r} is {len(envelope)} characters; the UI reads 20000")
    return envelope


def parse_envelope(value: str) -> dict[str, Any] | None:
    """A saved view's envelope with its state decoded, or None when it is not one we can read."""
    try:
        env = json.loads(value)
        state = json.loads(env["state"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(env.get("name"), str) or not isinstance(state, dict):
        return None
    return {**env, "state": state}


def view_name(study: str | None) -> str:
    return f"{VIEW_NAME_PREFIX}{study} trials" if study else f"{VIEW_NAME_PREFIX}trials"


def metric_columns(metric: tuple[str, str] | None) -> dict[str, Any]:
    """Columns and sort of a study ranked by `metric` (name, "max" | "min"): that metric takes
    final val acc's place, best first. None or val/acc: the default view."""
    if metric is None or metric[0] == names.VAL_ACC:
        return {}
    ranked = column("metrics", metric[0])
    columns = [ranked if c == column("metrics", names.FINAL_VAL_ACC) else c for c in STUDY_COLUMNS]
    return {"columns": columns, "order_by": ranked, "ascending": metric[1] == "min",
            "widths": {**COLUMN_WIDTHS, ranked: 120}}  # fmt: skip


def ensure_study_view(
    client,
    experiment_id: str,
    study: str | None,
    run_names: Sequence[str] = (),
    metric: tuple[str, str] | None = None,
) -> str:
    """Write (or refresh) the saved view of `study` on the experiment; return its key.

    `metric`: the study's ranking metric (`StudySpec.rank_metric`), shown and sorted by.
    Idempotent: the tag is rewritten only when the view differs from what it would be now (then
    `createdAt` is kept). Safe to call on every `lrstudy ui`.
    """
    key = view_key(study)
    tag = SHARED_VIEW_TAG_PREFIX + key
    name = view_name(study)
    state = study_view_state(study, run_names=run_names, **metric_columns(metric))
    current = client.get_experiment(experiment_id).tags.get(tag)
    old = parse_envelope(current) if current else None
    if old is not None and old["state"] == state and old["name"] == name:
        return key
    now = int(time.time() * 1000)
    created = old["createdAt"] if old and isinstance(old.get("createdAt"), int) else now
    client.set_experiment_tag(
        experiment_id, tag, view_envelope(name, state, created_ms=created, updated_ms=now)
    )
    return key


_SCHEDULE_SHORT = {
    "constant": "const",
    "step": "step",
    "multistep": "mstep",
    "exponential": "exp",
    "inverse_time": "invt",
    "linear": "lin",
    "polynomial": "poly",
    "cosine": "cos",
    "cosine_restarts": "cosr",
    "cyclic": "cyc",
    "one_cycle": "1cyc",
    "plateau": "plat",
}
_SWEPT_SHORT = {
    "batch_size": "bs",
    "momentum": "mom",
    "weight_decay": "wd",
    "train_fraction": "frac",
}


def compact_trial_name(
    optimizer: str,
    lr: float | None,
    schedule: str,
    seed: int,
    *,
    warmup: bool = False,
    swept: Mapping[str, Any] | None = None,
    lr_auto: bool = False,
) -> str:
    """A run name that fits the runs table: ``sgd 0.05 cos+w s1``, ``adam 3e-4 const bs64 s0``.

    Order and meaning as `Trial.name` (optimizer, LR, schedule, swept settings, seed); LR with 3
    significant digits, schedule abbreviated, ``+w`` for warmup.
    """
    lr_txt = "auto" if lr_auto and lr is None else _num(lr)
    sched = _SCHEDULE_SHORT.get(schedule, schedule) + ("+w" if warmup else "")
    parts = [optimizer, lr_txt, sched]
    for k, v in (swept or {}).items():
        short = _SWEPT_SHORT.get(k, k)
        parts.append(f"{short}{_num(v) if isinstance(v, int | float) else v}")
    return " ".join([*parts, f"s{seed}"])


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    txt = f"{v:.3g}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m[1] == "-" else "") + m[2], txt)


FLOAT32_MAX = 3.4028234663852886e38


def float32_short(value: float) -> float:
    """The shortest decimal that is the same float32: ``0.20000000298023224`` -> ``0.2``.

    Accuracies and losses are float32 on the device; logged as their float64 expansion they fill
    the runs table with digits that mean nothing. Non-finite and out-of-range values pass through.
    """
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        return value
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        short = float(f"{f32:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == f32:
            return short
    return f32
