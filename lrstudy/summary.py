"""The end-of-run summary `lrstudy run` prints: counts, how `lr: auto` chose, the best, and a
ranking metric no trial logged. Lines are returned; the CLI prints them."""

from __future__ import annotations

from lrstudy.spec.search import AUTO_FACTORS


def summary_lines(name: str, result) -> list[str]:
    """The end-of-run summary: counts over every worker, and the best configuration."""
    done = ", ".join(f"{n} {k}" for k, n in sorted(result.outcomes.items())) or "nothing new"
    if result.parent_run_id is None and not result.trials and result.outcomes:
        done = f"nothing new (finished: {done})"  # every trial was finished before
    line = f"{name}: {result.total} trials; {result.skipped} already finished; ran: {done}"
    if result.done_elsewhere:
        line += f"; {result.done_elsewhere} finished by another invocation"
    if result.closed_orphans:
        line += f"; closed {result.closed_orphans} orphaned run(s) as KILLED"
    lines = [line]
    autos = [t for t in result.trials if str(t.get("lr_source", "")).startswith("range_test")]
    lines += auto_lr_lines(autos, result.best)
    if result.best:
        # the report's words when the winner is an end of its family's LR grid (`edge_note`)
        edge = getattr(result.best, "edge", "").strip(" ()")
        lines.append(f"best: {result.best.text()}" + (f"; {edge}" if edge else ""))
    lines += missing_metric_lines(result)
    return lines


def auto_lr_lines(autos: list[dict], best) -> list[str]:
    """How `lr: auto` chose: per trial the range test's LR, or (successive halving among
    candidates around it, source "range_test:<rule>×<factor> of <recommendation>") one line
    per recommendation, with the candidate the search crowned."""
    lines, seen = [], set()
    for t in autos:
        source = str(t["lr_source"])
        if "×" not in source:
            lines.append(f"lr: auto for {t['name']}: {t['lr']:.3g} ({source})")
            continue
        rule, rest = source.removeprefix("range_test:").split("×", 1)
        recommended = rest.split(" of ", 1)[-1]
        optimizer = t["name"].split(" ", 1)[0]
        if (optimizer, recommended) in seen:
            continue
        seen.add((optimizer, recommended))
        line = (f"lr: auto for {optimizer}: the range test recommends {recommended} ({rule}); "
                f"successive halving checks {len(AUTO_FACTORS)} candidates from "
                f"×{AUTO_FACTORS[0]:g} to ×{AUTO_FACTORS[-1]:.3g} of it")  # fmt: skip
        won = [a for a in autos if best is not None and a.get("config_key") == best.config_key]
        if won and won[0]["name"].startswith(optimizer):
            factor = str(won[0]["lr_source"]).split("×", 1)[1].split(" ", 1)[0]
            line += f"; chosen: ×{factor} = {won[0]['lr']:.3g}"
        lines.append(line)
    return lines


def missing_metric_lines(result) -> list[str]:
    """When no trial run here logged the study's ranking metric: say so, and what was logged."""
    ranked = [t for t in result.trials if t.get("outcome") in ("ok", "diverged")]
    if (
        not ranked
        or result.metric is None
        or any(t.get("metric_value") is not None for t in ranked)
    ):
        return []
    logged = sorted({m for t in ranked for m in t.get("metrics_logged") or ()})
    if result.metric[0] in logged:  # logged, only not carried back (e.g. by a population)
        return []
    return [
        f"note: the study's metric {result.metric[0]!r} was never logged, so nothing ranks the "
        f"configurations; logged: {', '.join(logged) or 'nothing'} (set task.metric.name to one)"
    ]
