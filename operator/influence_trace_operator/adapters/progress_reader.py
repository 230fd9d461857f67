"""status.progress from the running worker's log: the last ``INFLUENCE_TRACE_PROGRESS`` line of its tail.

Read through ``pods/log`` (the operator's RBAC; the worker pod has no API credentials) on every pass
that finds the attempt still running: when its pod starts, on each resync, and every
``progress_seconds`` from the progress loop (lifecycle.progress_once), at most once per running trace
per period. While running, EST-TIME (``estimate.time``) shows the time left; once done, the
prediction. The fraction weighs each stage by its predicted seconds (status.estimate.stageSeconds),
the ETA is the elapsed time scaled by what is left (so it follows the real speed), falling back to the
prediction before the first step. A log that cannot be read leaves the progress as it was (logged at
debug level): progress is for people.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from influence_trace.api.progress import STAGE_ORDER, Progress, last_progress
from influence_trace.api.status import ProgressStatus, TraceStatus
from influence_trace.planning.duration import readable
from kubernetes.client.rest import ApiException

from influence_trace_operator.adapters import metrics
from influence_trace_operator.rules import classify, labels

log = logging.getLogger(__name__)
TAIL_LINES = 50  # the worker prints at most a line every few seconds per loop; its other logs are sparse


def read_log(kube: Any, namespace: str, pod: str) -> str | None:
    """The worker container's last lines, or None when the log cannot be read."""
    core = getattr(kube, "core", None)
    if core is None:
        return None
    metrics.PROGRESS_READS.inc()
    try:
        resp = core.read_namespaced_pod_log(pod, namespace, container=labels.WORKER_CONTAINER,
                                            tail_lines=TAIL_LINES, _preload_content=False)
    except (ApiException, OSError, ValueError) as err:
        log.debug("no log of %s/%s: %s", namespace, pod, err)
        return None
    data = resp.data
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def fraction(progress: Progress, stage_seconds: dict[str, float]) -> float:
    """Share of the trace done: finished stages and this stage's share, weighted by predicted seconds."""
    order = [s for s in STAGE_ORDER if s in stage_seconds] or [progress.stage]
    if progress.stage not in order:
        return min(1.0, progress.step / max(1, progress.total))
    weights = {s: stage_seconds.get(s, 0.0) + 1.0 for s in order}  # a second each: no stage weighs 0
    total = sum(weights.values())
    before = sum(weights[s] for s in order[: order.index(progress.stage)])
    here = weights[progress.stage] * progress.step / max(1, progress.total)
    return min(1.0, (before + here) / total)


def plural(unit: str, count: int) -> str:
    """'1 batch', '3 batches', '14 modules'."""
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def to_status(progress: Progress, stage_seconds: dict[str, float], now: str) -> ProgressStatus:
    done = fraction(progress, stage_seconds)
    eta = progress.elapsed * (1 - done) / done if done > 0 else sum(stage_seconds.values()) or None
    return ProgressStatus(
        stage=progress.stage, step=progress.step, total=progress.total, unit=progress.unit,
        text=f"{progress.step}/{progress.total} {plural(progress.unit, progress.total)}",
        fraction=round(done, 4), tokens=progress.tokens, elapsed_seconds=round(progress.elapsed, 1),
        eta_seconds=round(eta, 1) if eta is not None else None, eta=readable(eta), updated_at=now,
        training_step=f"{progress.train_step}/{progress.train_steps}" if progress.train_step else None,
    )


def update(kube: Any, namespace: str, status: TraceStatus, pods: list[dict[str, Any]], now: str) -> None:
    """Set status.progress from the first running pod's log (rank 0's node of a multi-node Job)."""
    running = sorted((p for p in pods if classify.is_running(p)), key=lambda p: p["metadata"]["name"])
    if not running:
        return
    text = read_log(kube, namespace, running[0]["metadata"]["name"])
    progress = last_progress(text) if text else None
    if progress is None:
        return
    stage_seconds = status.estimate.stage_seconds if status.estimate else {}
    fresh = to_status(progress, stage_seconds, now)
    old = status.progress
    if old is not None and old.model_copy(update={"updated_at": now}) == fresh:
        return  # the same line again: no status write
    status.progress = fresh
    if status.estimate is not None and fresh.eta:  # EST-TIME counts down while the worker runs
        status.estimate.time = f"{fresh.eta} left"


def finish(status: TraceStatus) -> str:
    """The trace succeeded: the progress shows it done, with the attempt's duration; returns the
    comparison with the prediction in words (e.g. "took 41s, predicted 14m"), or ""."""
    record = status.current()
    took = seconds_between(record.running_at or record.started_at, record.finished_at) if record else None
    update = {"fraction": 1.0, "text": "done", "eta_seconds": 0.0, "eta": "0s", "actual_seconds": took}
    if status.result is not None and status.result.steps:  # the Step column shows the steps done
        update["training_step"] = status.result.steps
    status.progress = (status.progress or ProgressStatus()).model_copy(update=update)
    predicted = status.estimate.seconds if status.estimate else None
    _predicted_time(status)  # EST-TIME: the prediction again, beside the actual duration
    if took is None:
        return ""
    return f"took {readable(took)}" + (f", predicted {readable(predicted)}" if predicted else "")


def restart(status: TraceStatus) -> None:
    """A new attempt starts from the beginning: no progress, EST-TIME the prediction again."""
    status.progress = None
    _predicted_time(status)


def _predicted_time(status: TraceStatus) -> None:
    if status.estimate is not None:
        seconds = status.estimate.seconds
        status.estimate.time = readable(seconds) if seconds is not None else None


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one RFC 3339 time to another (None if either is missing or unreadable)."""
    try:
        a, b = (dt.datetime.fromisoformat(str(x).replace("Z", "+00:00")) for x in (start, end))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())
