"""Operator settings: one typed object, read from the environment (``INFLUENCETRACE_*``) once.

Every knob has help text and a default that works on the local cluster; the Helm chart sets them
through environment variables, the command line overrides the pools file and namespaces.
"""

from __future__ import annotations

from influence_trace.api.spec import DURATION_PATTERN
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """How the operator builds worker Jobs and how it runs."""

    model_config = SettingsConfigDict(env_prefix="INFLUENCETRACE_", extra="ignore")

    worker_image: str = Field(
        "influence-trace-worker:latest", description="Image of the worker (the Dockerfile's worker target)."
    )
    image_pull_policy: str = Field("IfNotPresent", description="Pull policy of the worker container.")
    worker_command: list[str] = Field(
        default_factory=lambda: ["influence-trace", "run"],
        description="Command that runs a manifest; the manifest's path is appended.",
    )
    service_account: str | None = Field(
        None, description="ServiceAccount of worker pods (the worker needs no API access; none = default)."
    )
    pools_file: str | None = Field(None, description="YAML pool table (default: the built-in pools).")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (empty: all namespaces)."
    )
    default_max_attempts: int = Field(
        3, ge=1, le=20, description="Launches allowed to a trace whose spec.resources.maxAttempts is unset."
    )
    headroom: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of a GPU's memory kept free when choosing a pool."
    )
    host_memory_growth: float = Field(
        2.0, gt=1.0, description="Factor applied to the host memory request after a kernel OOM kill."
    )
    min_host_memory_bytes: int = Field(4 * 2**30, ge=0, description="Floor of the host memory request.")
    cpu_per_gpu: int = Field(4, ge=1, description="CPU cores requested per GPU.")
    resync_seconds: float = Field(
        30.0, gt=0, description="How often every unfinished trace is reconciled even without events."
    )
    progress_seconds: float = Field(
        10.0, ge=0, description=(
            "How often running attempts' logs are read for status.progress: one pass (and at most one "
            "log read) per running trace per period (0: only at resync)."
        ),
    )
    liveness_port: int = Field(8080, description="Port of /healthz and /metrics (0: off).")
    wedged_seconds: float = Field(
        120.0, gt=0, description="A reconcile pass (or resync round) this late makes /healthz fail."
    )
    lease: bool = Field(True, description="Act only while holding the Lease (one active replica).")
    lease_name: str = Field("influence-trace-operator", description="Name of the coordination.k8s.io Lease.")
    lease_namespace: str | None = Field(
        None, description="Namespace of the Lease (default: the operator pod's own, as for the history)."
    )
    lease_seconds: float = Field(15.0, ge=1, description="Lease duration; renewed every third of it.")
    shutdown_seconds: float = Field(
        20.0, gt=0, description=(
            "Bound of a clean stop (passes in flight, history, events, Lease); the chart's "
            "terminationGracePeriodSeconds is this plus 10."
        ),
    )
    workers: int = Field(48, ge=1, description="Threads that run reconciles (they wait on the API server).")
    default_queue: str | None = Field(
        None, description="Kueue LocalQueue for traces without spec.queue (none: such Jobs start at once)."
    )
    history: bool = Field(
        True, description="Learn placement from finished attempts (a history ConfigMap); false: model only."
    )
    history_namespace: str | None = Field(
        None, description="Namespace of the history ConfigMap (default: the operator pod's own)."
    )
    history_configmap: str = Field("influence-trace-history", description="Name of the history ConfigMap.")
    history_limit: int = Field(200, ge=1, le=2000, description="Observations kept (oldest dropped).")
    history_cache_seconds: float = Field(
        30.0, ge=0, description="Placement re-reads the history ConfigMap at most this often (0: every time)."
    )
    history_flush_seconds: float = Field(
        1.0, ge=0, description="Finished attempts wait this long to be written together (0: at once)."
    )
    history_margin: float = Field(
        0.05, ge=0.0, lt=1.0, description="Margin over a measured peak (replaces the headroom for it)."
    )
    default_pending_timeout: str = Field(
        "30m", pattern=DURATION_PATTERN,
        description="How long an attempt may wait for a node when spec.resources.pendingTimeout is unset.",
    )
    default_run_timeout: str = Field(
        "24h", pattern=DURATION_PATTERN,
        description="activeDeadlineSeconds of a Job when spec.resources.runTimeout is unset.",
    )
    tmp_size_limit: str = Field(
        "16Gi", description="sizeLimit of a worker pod's /tmp emptyDir, also its ephemeral-storage request."
    )
    shm_size_limit: str = Field("8Gi", description="sizeLimit of a worker pod's /dev/shm (memory) emptyDir.")
    max_nodes: int = Field(
        16, ge=1, le=64, description="Largest spec.resources.nodes the operator runs (the CRD allows 64)."
    )
    namespace_pools: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Pools each namespace may use, as JSON {namespace: [pool, ...]}; a namespace not listed may use "
            "the pools under '*', or every pool when '*' is absent too."
        ),
    )
    network_policy: bool = Field(
        True, description="Give each multi-node trace a NetworkPolicy admitting only its own pods."
    )
    api_backoff_seconds: float = Field(
        2.0, gt=0, description="First wait after a refused API call; doubled per failure."
    )
    api_backoff_max_seconds: float = Field(300.0, gt=0, description="Longest wait between retries.")
