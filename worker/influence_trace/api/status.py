"""The InfluenceTrace status: what the operator writes, and nothing else.

The CRD's status schema is generated from these models (``influence_trace.api.crd``), so the API server
keeps exactly the fields the operator writes instead of pruning them silently. Wire names are
camelCase like the spec's; Python code uses the snake_case attributes. Unlike the spec, status
models ignore unknown fields when read back: an older operator's leftovers must never make a
newer operator crash on the object.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from influence_trace.api.rules import column
from influence_trace.api.units import gb

Phase = Literal["Pending", "Running", "Escalating", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})

# How one attempt (one Job) ended; "Running" while it has not.
Outcome = Literal[
    "Running",
    "Succeeded",
    "GPUOutOfMemory",
    "HostOutOfMemory",
    "KernelOOMKilled",
    "InvalidInput",
    "Error",
    "Failed",
    "Cancelled",  # its Job was deleted by someone other than the operator, or the trace was cancelled
    "Evicted",  # its pod (or Kueue Workload) was evicted once too often: maxAttempts used up
    "Unschedulable",  # never got a node within resources.pendingTimeout
]
ConditionStatus = Literal["True", "False", "Unknown"]


class StatusModel(BaseModel):
    """Base for status sections: camelCase on the wire, unknown fields dropped when read."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class EstimateStatus(StatusModel):
    """The memory model's prediction and the pool it chose (or why none)."""

    pool: str | None = Field(None, description="Smallest allowed pool the estimate fits, if any.")
    gpu_bytes: int = Field(0, ge=0, description="Predicted peak GPU memory per device.")
    host_bytes: int = Field(0, ge=0, description="Predicted peak host memory per worker pod.")
    gpu: str | None = Field(None, description="gpuBytes for people, e.g. '44.9 GB' (the Est-GPU column).",
                            json_schema_extra=column("Est-GPU", 6, "Predicted peak GPU memory per device"))
    reason: str | None = Field(None, description="Why this pool, or why no pool fits.")
    source: str | None = Field(None, description="'model', or 'observed (n runs)' when the estimate is "
                               "the measured peak of earlier runs of this configuration.")
    seconds: float | None = Field(None, ge=0, description="Predicted duration on the chosen pool.")
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Predicted seconds per stage.")
    time: str | None = Field(None, description="seconds for people, e.g. '12m' (the Est-Time column).",
                             json_schema_extra=column("Est-Time", 22, "Predicted duration on the pool"))

    @model_validator(mode="after")
    def _readable_gpu(self) -> EstimateStatus:
        if self.gpu is None:
            self.gpu = gb(self.gpu_bytes)
        return self


class ProgressStatus(StatusModel):
    """Where the running worker is, from the last progress line of its log (api/progress.py)."""

    stage: str | None = Field(None, description="generate, capture or hessian.",
                              json_schema_extra=column("Stage", 20))
    step: int = Field(0, ge=0, description="Steps of the stage done.")
    total: int = Field(0, ge=0, description="Steps of the stage.")
    unit: str | None = Field(None, description="What a step is (batch, module).")
    text: str | None = Field(None, description="e.g. '57/196 modules' (the Progress column).",
                             json_schema_extra=column("Progress", 21))
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of the whole trace done (0..1).")
    tokens: int | None = Field(None, ge=0, description="Response tokens the stage has covered.")
    elapsed_seconds: float = Field(0.0, ge=0, description="Seconds since the worker started.")
    eta_seconds: float | None = Field(None, ge=0, description="Seconds left, by the predicted stage times.")
    eta: str | None = Field(None, description="eta_seconds for people, e.g. '4m'.")
    updated_at: str | None = Field(None, description="When the operator read the line (RFC 3339).")
    training_step: str | None = Field(None, description="Training step running of all, e.g. 3/10; once "
                                      "Succeeded, the steps done (spec.training).",
                                      json_schema_extra=column("Step", 9))
    actual_seconds: float | None = Field(None, ge=0, description="Once Succeeded: the attempt's duration "
                                         "(worker start to outcome), beside estimate.seconds.")


class AttemptRecord(StatusModel):
    """One Job: where it ran and how it ended."""

    attempt: int = Field(ge=1, description="1 for the first Job, counting every relaunch.")
    pool: str = Field(description="GPU pool the Job was placed on.")
    job: str = Field(description="Name of the Job.")
    host_memory_bytes: int = Field(0, ge=0, description="Host memory requested per pod.")
    started_at: str | None = Field(None, description="When the operator created the Job (RFC 3339).")
    running_at: str | None = Field(
        None, description="When the worker container started running: run time counts from here, not "
        "from the Job's creation (time waiting for a node is not the worker's).")
    finished_at: str | None = Field(None, description="When the attempt's outcome was recorded.")
    outcome: Outcome = Field("Running", description="How the attempt ended.")
    exit_code: int | None = Field(None, description="The worker container's exit code.")
    reason: str | None = Field(None, description="Container or worker reason (e.g. OOMKilled).")
    stage: str | None = Field(None, description="Pipeline stage the worker was in when it failed.")
    message: str | None = Field(None, description="The worker's message, shortened.")
    peak_gpu_bytes: int | None = Field(None, ge=0, description="Peak GPU memory the worker reported.")
    evictions: int = Field(0, ge=0, description="Pods of this Job evicted and relaunched by the Job.")
    flavor: str | None = Field(None, description="Kueue ResourceFlavor the Job was admitted on.")
    kueue_evictions: int = Field(
        0, ge=0, description="Times Kueue evicted (e.g. preempted) the Job's Workload and requeued it."
    )


class ResultStatus(StatusModel):
    """The headline figures of a successful run (the worker's termination message)."""

    rows_emitted: int = Field(0, ge=0, description="Rows written to rows.parquet.",
                              json_schema_extra=column("Rows", 7))
    output_path: str = Field("", description="Directory holding rows.parquet and summary.json.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per pipeline stage.")
    peak_gpu_bytes: int = Field(0, ge=0, description="Peak GPU memory per device.")
    peak_host_bytes: int = Field(0, ge=0, description="Peak host memory of the worker.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Headline quality metrics (auc, signConsistency, ...)."
    )
    steps: str | None = Field(None, description="Training steps done of all, e.g. 3/10 (spec.training).")
    report: str | None = Field(None, description="The HTML report the worker wrote beside the outputs.")


class Condition(StatusModel):
    """A Kubernetes-style condition; types and reasons are fixed sets (operator's conditions.py)."""

    type: str = Field(description="Placed, Running, Succeeded or Failed.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, paired with the message.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="Generation it describes.")


class TraceStatus(StatusModel):
    """The whole status of an InfluenceTrace."""

    phase: Phase | None = Field(None, description="Pending, Running, Escalating, Succeeded or Failed.",
                                json_schema_extra=column("Phase", 1))
    reason: str | None = Field(
        None, description="Why the phase is what it is: the reason of the condition that explains it "
        "(e.g. OutOfGPUMemory, Cancelled, InvalidSpec, PodPending).",
        json_schema_extra=column("Reason", 1.5, "Reason of the condition that explains the phase"))
    pool: str | None = Field(None, description="Pool of the current or last attempt.",
                             json_schema_extra=column("Pool", 2))
    attempt: int = Field(0, ge=0, description="Number of the current or last attempt (0 = none yet).",
                         json_schema_extra=column("Attempt", 5))
    queue: str | None = Field(None, description="Kueue LocalQueue admitting the trace's Jobs, if any.",
                              json_schema_extra=column("Queue", 8))
    estimate: EstimateStatus | None = Field(None, description="Memory estimate and chosen pool.")
    attempts: list[AttemptRecord] = Field(default_factory=list, description="One entry per Job.")
    progress: ProgressStatus | None = Field(None, description="The running worker's stage and step.")
    result: ResultStatus | None = Field(None, description="Headline figures once Succeeded.")
    conditions: list[Condition] = Field(default_factory=list, description="Placed/Running/...")
    observed_generation: int | None = Field(None, ge=0, description="Spec generation last acted on.")
    message: str | None = Field(None, description="One line on what is happening or went wrong.",
                                json_schema_extra=column("Message", 30, priority=1))

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: nothing more will be launched."""
        return self.phase in TERMINAL_PHASES

    def current(self) -> AttemptRecord | None:
        """The record of the current attempt, if one was launched."""
        for record in self.attempts:
            if record.attempt == self.attempt:
                return record
        return None

    def wire(self) -> dict:
        """The dict written to the API server (camelCase, no unset optional fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
