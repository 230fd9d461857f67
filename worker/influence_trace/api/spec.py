"""The InfluenceTrace manifest: the one definition of the API.

The worker validates manifests with these models, the operator reads resources through them, and the
CRD schema in ``crds/`` is generated from them (``influence_trace.api.crd``). Field names are the API's
camelCase names; Python code uses the snake_case attribute names. Unknown fields are errors and no
value is silently replaced: what is not given takes the documented default, and anything else fails
with the field's path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from influence_trace.api.architectures import PRESETS
from influence_trace.api.rules import SET, Rule, check_rules, column, validations

API_GROUP = "influencetrace.dev"
API_VERSION = "v1alpha1"
KIND = "InfluenceTrace"
PLURAL = "influencetraces"

ModelDType = Literal["bfloat16", "float16", "float32", "float64"]
CaptureDType = Literal["bfloat16", "float32", "float64"]
HessianDType = Literal["float32", "float64"]
if TYPE_CHECKING:
    PresetName = str  # a type checker cannot read a Literal built from the presets' keys
else:
    PresetName = Literal[tuple(PRESETS)]
# A trace's name: a DNS-1035 label short enough that every derived name stays valid without cutting:
# the ConfigMap <name>-manifest (61), the Service <name>-ranks (58, a DNS-1035 label itself), the Job
# <name>-a<attempt> (56) and its Indexed pods' hostnames <job>-<rank> (59), each within 63.
NAME_MAX = 52
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
WORKSPACE_MOUNT = "/workspace"  # where the worker pods mount spec.storage.volumeClaim
MAX_NODES = 64  # the CRD's bound on resources.nodes; the operator's own limit (chart maxNodes) is lower
PATH_MAX = 1024
DURATION_PATTERN = r"^[1-9][0-9]{0,5}(s|m|h)$"
# A duration such as 90s, 30m or 12h (one number and one unit, at most 999999 of it).
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=7)]
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(value: str) -> int:
    """Seconds in a ``Duration`` (already validated by the pattern)."""
    return int(value[:-1]) * _UNIT_SECONDS[value[-1]]

DEFAULT_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


class ApiModel(BaseModel):
    """Base for every manifest section: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class Architecture(ApiModel):
    """Explicit model shapes, for the memory model when no preset or config.json is at hand."""

    hidden_size: int = Field(ge=1, description="Width of the residual stream.")
    intermediate_size: int = Field(ge=1, description="Width of the MLP's gate/up projections.")
    num_layers: int = Field(ge=1, description="Number of decoder blocks.")
    num_attention_heads: int = Field(ge=1, description="Query heads per block.")
    num_key_value_heads: int = Field(ge=1, description="Key/value heads per block (GQA).")
    head_dim: int = Field(ge=1, description="Width of one attention head.")
    vocab_size: int = Field(ge=1, description="Vocabulary size (embedding and LM head rows).")
    tie_word_embeddings: bool = Field(False, description="Whether the LM head shares the embedding.")


class ModelSpec(ApiModel):
    """Which causal LM to trace and in which precision."""

    path: str = Field(
        min_length=1, max_length=PATH_MAX, description="Hugging Face model directory as the worker sees it."
    )
    preset: PresetName | None = Field(None, description="Named architecture for the memory model.")
    architecture: Architecture | None = Field(None, description="Explicit shapes instead of a preset.")
    dtype: ModelDType = Field("bfloat16", description="Precision the model is loaded in.")


class GenerateSpec(ApiModel):
    """Sample the rollouts with the model before tracing them."""

    prompts_path: str = Field(min_length=1, description="JSONL or Parquet prompts file.")
    responses_per_prompt: int = Field(8, ge=2, description="Responses sampled per prompt (a group).")
    max_response_tokens: int = Field(1024, ge=1, description="At most this many new tokens each.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    batch_size: int = Field(16, ge=1, description="Sequences generated together.")
    use_chat_template: bool = Field(True, description="Apply the tokenizer's chat template if it has one.")
    reward_column: str | None = Field(
        None,
        min_length=1,
        description=(
            "Prompts column with a per-prompt mapping {answer: reward} used instead of the built-in "
            "0/1 verifier: a response earns the reward of the entry its final answer matches, else 0."
        ),
    )


PATH_OR_GENERATE = Rule(
    cel="has(self.path) || has(self.generate) || has(self.stepPaths)",
    holds=lambda r: r.path is not None or r.generate is not None or r.step_paths is not None,
    message="give rollouts.path, rollouts.generate, or both (or rollouts.stepPaths, a file per step)",
    reason="FieldValueRequired",
)
STEP_PATHS_ALONE = Rule(
    cel="!has(self.stepPaths) || (!has(self.path) && !has(self.generate))",
    holds=lambda r: r.step_paths is None or (r.path is None and r.generate is None),
    message="rollouts.stepPaths replaces rollouts.path and rollouts.generate; give only one of them",
    field_path=".stepPaths",
)
SELF_SCALE_NEEDS_EXCLUSION = Rule(
    cel="!has(self.selfInfluenceScale) || self.selfInfluenceScale == 0.0 "
    "|| !has(self.excludeSelfResponse) || self.excludeSelfResponse",
    holds=lambda t: t.self_influence_scale == 0 or t.exclude_self_response,
    message="selfInfluenceScale > 0 needs excludeSelfResponse: true",
    field_path=".selfInfluenceScale",
)


class RolloutsSpec(ApiModel):
    """The responses to trace: read from a file, or generated first."""

    model_config = ConfigDict(json_schema_extra=validations(PATH_OR_GENERATE, STEP_PATHS_ALONE))

    path: str | None = Field(None, min_length=1, max_length=PATH_MAX,
                             description="JSONL or Parquet, one row per response.")
    tokens_estimate: int | None = Field(None, ge=1, description="Response tokens, for the memory model.")
    max_prompts: int = Field(0, ge=0, description="Trace at most this many selected groups (0 = all).")
    generate: GenerateSpec | None = Field(None, description="Generate the rollouts with the model first.")
    step_paths: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, max_length=10000,
        description="One rollouts file per training step (training.steps entries).",
    )

    @model_validator(mode="after")
    def _rules(self) -> RolloutsSpec:
        check_rules(self, (PATH_OR_GENERATE, STEP_PATHS_ALONE))
        return self


class TraceSettings(ApiModel):
    """The influence computation's settings (see docs/algorithm.md)."""

    model_config = ConfigDict(json_schema_extra=validations(SELF_SCALE_NEEDS_EXCLUSION))

    factor: int = Field(32, ge=1, description="Projection factor: k = max(1, width // factor); 1 = exact.",
                        json_schema_extra=column("Factor", 3))
    scope: Literal["per_prompt", "all_selected"] = Field(
        "per_prompt", description="One Hessian and contrast per group, or one over all selected groups.",
        json_schema_extra=column("Scope", 4),
    )
    output_function: Literal["log_prob", "log_prob_reward", "log_prob_advantage"] = Field(
        "log_prob_reward", description="Response objective; log_prob_reward is an alias of log_prob."
    )
    loss_aggregation: Literal["token_mean", "sum"] = Field(
        "token_mean", description="How a response's token log-probabilities are combined."
    )
    contrastive_agg: Literal["sum", "mean", "advantage"] = Field(
        "mean", description="How accepted and rejected influences are contrasted."
    )
    hessian_source: Literal["token", "response"] = Field(
        "token", description="Build H from per-token or per-response gradients."
    )
    hessian_mode: Literal["inverse", "identity"] = Field(
        "inverse", description="inverse: g_r^T (H + lambda I)^-1 g_t; identity: plain dot products."
    )
    max_hessian_dim: int = Field(-1, ge=-1, description="Cap on k_in * k_out per module (-1 = uncapped).")
    exclude_self_response: bool = Field(True, description="Leave the token's own response out.")
    self_influence_scale: float = Field(
        0.0, ge=0.0, le=1.0, description="Blend back a share of the self term (needs exclusion)."
    )
    reg_lambda: float = Field(-1.0, description="Damping; <= 0 means 0.1 * trace(H) / D.")
    modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: list(DEFAULT_MODULES),
        min_length=1,
        description="Suffixes of the traced nn.Linear modules' qualified names.",
        json_schema_extra=SET,
    )
    capture_dtype: CaptureDType = Field("bfloat16", description="Precision of the stored factors.")
    hessian_dtype: HessianDType = Field("float32", description="Precision of H, Cholesky and solves.")
    seed: int = Field(0, ge=0, description="Seeds the projections and generation.")
    debug_hessian_similarity: bool = Field(False, description="Also compute the HINV_DOT diagnostic.")
    allow_tf32: bool | None = Field(
        None, description="TF32 for CUDA matmuls: true or false forces it; unset follows captureDtype "
        "(on for bfloat16, whose 8 significant bits TF32's 11 exceed; off for float32/float64)."
    )
    max_damping_retries: int = Field(
        6, ge=0, description="Cholesky retries, each with ten times the damping, before failing."
    )
    deterministic: bool = Field(
        False, description="Deterministic torch algorithms (bitwise equal scores between GPU runs; slower). "
        "Off: atomics in some CUDA kernels change the scores' last bits from run to run."
    )

    @property
    def tf32(self) -> bool:
        """Whether CUDA matmuls (the Hessian's Gram above all) may use TF32: allowTf32, else captureDtype."""
        return self.capture_dtype == "bfloat16" if self.allow_tf32 is None else self.allow_tf32

    @model_validator(mode="after")
    def _check_combinations(self) -> TraceSettings:
        check_rules(self, (SELF_SCALE_NEEDS_EXCLUSION,))
        if len(set(self.modules)) != len(self.modules):
            raise ValueError("modules must not repeat a suffix")
        return self


class ResourcesSpec(ApiModel):
    """What the worker runs on, and how far the operator may escalate."""

    gpus: int = Field(1, ge=1, le=16, description="GPUs per worker pod (one process per GPU).")
    nodes: int = Field(1, ge=1, le=MAX_NODES,
                       description="Worker pods (more than one makes an Indexed Job; the operator's "
                       "limit, chart maxNodes, may be lower).")
    pools: list[Annotated[str, Field(min_length=1, max_length=63)]] | None = Field(
        None, max_length=16,
        description="Allowed GPU pools in escalation order (default: all, smallest first).",
        json_schema_extra=SET,
    )
    max_attempts: int | None = Field(
        None, ge=1, le=20,
        description="Jobs the operator may launch in all (unset: the operator's default, 3 by default).",
    )
    pending_timeout: Duration | None = Field(
        None,
        description=(
            "How long an attempt may wait for a node, e.g. 30m (unset: the operator's default). Past it "
            "the attempt moves to a larger allowed pool when the scheduler reports a capacity shortage, "
            "else the trace fails with the scheduler's reason."
        ),
    )
    run_timeout: Duration | None = Field(
        None,
        description=(
            "How long one attempt's Job may be active, e.g. 12h (the Job's activeDeadlineSeconds; "
            "unset: the operator's default)."
        ),
    )


class StorageSpec(ApiModel):
    """Where the worker's data lives in the cluster."""

    volume_claim: str | None = Field(
        None, min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="PVC mounted at /workspace (looked up before each launch).",
    )


class OutputSpec(ApiModel):
    """Where the worker writes rows.parquet and summary.json."""

    path: str = Field(
        min_length=1, max_length=PATH_MAX,
        description="Output directory as the worker sees it (under /workspace/ when storage.volumeClaim "
        "is set: anything else is the container's own disk, lost with the pod).",
    )
    keep_factors: bool = Field(
        False,
        description=(
            "Save the captured per-token factors (large) so a relaunched run, e.g. on a larger GPU "
            "after running out of memory, skips capture."
        ),
    )


# Label and annotation keys a trace may not put on its pods: Kubernetes' own (kubernetes.io, k8s.io and
# their subdomains: e.g. batch.kubernetes.io/controller-uid selects a Job's pods) and the operator's
# (influencetrace.dev), except the kwok simulation keys (influencetrace.dev/simulate*, hack/README.md).
RESERVED_KEY_REGEX = r"^([^/]*\.)?(kubernetes\.io|k8s\.io|influencetrace\.dev)/"
SIMULATE_KEY_PREFIX = "influencetrace.dev/simulate"
MAX_POD_KEYS = 32  # entries in spec.pod.labels, and in spec.pod.annotations
MAX_ANNOTATION_VALUE = 4096


def _unreserved(keys: Any) -> bool:
    return all(not re.match(RESERVED_KEY_REGEX, k) or k.startswith(SIMULATE_KEY_PREFIX) for k in keys)


def _no_reserved_rule(field: str) -> Rule:
    cel_regex = RESERVED_KEY_REGEX.replace("\\", "\\\\")
    return Rule(
        cel=f"!has(self.{field}) || self.{field}.all(k, size(k) <= 317 && (!k.matches('{cel_regex}') "
        f"|| k.startsWith('{SIMULATE_KEY_PREFIX}')))",
        holds=lambda m: _unreserved(getattr(m, field)) and all(len(k) <= 317 for k in getattr(m, field)),
        message=f"{field} keys must not use the reserved prefixes kubernetes.io/, k8s.io/, "
        f"influencetrace.dev/ (or their subdomains) and are at most 317 characters",
        field_path=f".{field}",
        reason="FieldValueForbidden",
    )


NO_RESERVED_LABELS = _no_reserved_rule("labels")
NO_RESERVED_ANNOTATIONS = _no_reserved_rule("annotations")


class PodSpecExtras(ApiModel):
    """Labels and annotations copied onto the worker's pods (reserved prefixes refused)."""

    model_config = ConfigDict(json_schema_extra=validations(NO_RESERVED_LABELS, NO_RESERVED_ANNOTATIONS))

    labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=MAX_POD_KEYS, description="Extra pod labels."
    )
    annotations: dict[str, Annotated[str, Field(max_length=MAX_ANNOTATION_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_POD_KEYS, description="Extra pod annotations."
    )

    @model_validator(mode="after")
    def _rules(self) -> PodSpecExtras:
        check_rules(self, (NO_RESERVED_LABELS, NO_RESERVED_ANNOTATIONS))
        return self


class AdamWSpec(ApiModel):
    """The policy update's optimizer (torch's AdamW with decoupled weight decay, then norm clipping)."""

    lr: float = Field(1e-6, ge=0.0, le=1.0, description="Learning rate.")
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2,
        description="Decay rates of the first and second moment estimates.",
    )
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="Added to the second moment's square root.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this (0 = none).")


class TrainingSpec(ApiModel):
    """Several RL steps: trace on the current weights, then update the policy (docs/algorithm.md)."""

    steps: int = Field(1, ge=1, le=10000, description="Training steps, each traced.")
    ppo_epochs: int = Field(1, ge=1, le=64, description="Passes over a step's mini-batches.")
    skip_optimizer_step: bool = Field(False, description="Trace every step without updating the weights.")
    mini_batch_size: int = Field(
        0, ge=0, description="Responses per optimizer step (0 = all of a step's traced responses)."
    )
    optimizer: AdamWSpec = Field(default_factory=AdamWSpec, description="AdamW settings.")
    checkpoint_every: int = Field(
        1, ge=1, description="Save weights and optimizer state every this many steps (and after the last)."
    )


class ValidateSpec(ApiModel):
    """Check the scores against the policy update they explain: the linear datamodeling score (LDS).

    After the trace, from the same starting weights, ``subsets`` policy updates each keep a random
    ``fraction`` of the response tokens in the loss; the LDS is the Spearman correlation between each
    subset's summed token scores and the measured change of the contrast objective (docs/algorithm.md,
    "Validation")."""

    subsets: int = Field(32, ge=2, le=4096, description="Random token subsets (m), one policy update each.")
    fraction: float = Field(0.5, gt=0.0, lt=1.0,
                            description="Share of the response tokens each subset keeps.")
    seed: int = Field(0, ge=0, description="Seeds the subsets (and the random 1% removed).")
    target: Literal["sgd", "optimizer"] = Field(
        "sgd", description="sgd: one gradient step on the traced modules' weights only (first order holds); "
        "optimizer: the run's own update (training's AdamW, ppoEpochs, miniBatchSize, gradClip).",
    )
    step_size: float = Field(
        1e-3, gt=0.0, le=1.0,
        description="sgd only: the learning rate is chosen so that the full update (every token kept) moves "
        "the traced weights by this fraction of their norm; every subset uses that learning rate.",
    )


OUTPUT_ON_VOLUME = Rule(
    cel=f"!has(self.storage.volumeClaim) || self.output.path.startsWith('{WORKSPACE_MOUNT}/')",
    holds=lambda s: s.storage.volume_claim is None or s.output.path.startswith(f"{WORKSPACE_MOUNT}/"),
    message=f"output.path must lie under {WORKSPACE_MOUNT}/, where storage.volumeClaim is mounted "
    "(anything else is the container's own disk, lost with the pod)",
    field_path=".output.path",
)
STEPS_NEED_ROLLOUTS = Rule(
    cel="!has(self.training) || !has(self.training.steps) || self.training.steps <= 1 "
    "|| has(self.rollouts.generate) || has(self.rollouts.stepPaths)",
    holds=lambda s: s.training is None or s.training.steps <= 1 or s.rollouts.generate is not None
    or s.rollouts.step_paths is not None,
    message="training.steps > 1 needs rollouts.generate (each step samples from the current policy) "
    "or rollouts.stepPaths (one rollouts file per step)",
    field_path=".training.steps",
)
STEP_PATHS_MATCH_STEPS = Rule(
    cel="!has(self.rollouts.stepPaths) || size(self.rollouts.stepPaths) == "
    "(has(self.training) && has(self.training.steps) ? self.training.steps : 1)",
    holds=lambda s: s.rollouts.step_paths is None
    or len(s.rollouts.step_paths) == (s.training.steps if s.training else 1),
    message="rollouts.stepPaths needs exactly one file per training step (training.steps entries)",
    field_path=".rollouts.stepPaths",
)


OPTIMIZER_TARGET_ONE_OBJECTIVE = Rule(
    cel="!has(self.validate) || !has(self.validate.target) || self.validate.target != 'optimizer' "
    "|| (has(self.trace) && has(self.trace.scope) && self.trace.scope == 'all_selected' "
    "&& has(self.trace.excludeSelfResponse) && !self.trace.excludeSelfResponse)",
    holds=lambda s: s.validation is None or s.validation.target != "optimizer"
    or (s.trace.scope == "all_selected" and not s.trace.exclude_self_response),
    message="validate.target optimizer needs trace.scope all_selected and trace.excludeSelfResponse false "
    "(one objective for every token; per-group and per-response outcomes are measured with target sgd)",
    field_path=".validate.target",
)


class InfluenceTraceSpec(ApiModel):
    """The spec of an InfluenceTrace."""

    model_config = ConfigDict(json_schema_extra=validations(STEPS_NEED_ROLLOUTS, STEP_PATHS_MATCH_STEPS,
                                                                 OUTPUT_ON_VOLUME,
                                                                 OPTIMIZER_TARGET_ONE_OBJECTIVE))

    model: ModelSpec
    rollouts: RolloutsSpec
    trace: TraceSettings = Field(default_factory=TraceSettings)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    output: OutputSpec
    pod: PodSpecExtras = Field(default_factory=PodSpecExtras)
    training: TrainingSpec | None = Field(None, description="Several traced RL steps (absent: one step).")
    validation: ValidateSpec | None = Field(  # ``validate`` on the wire (BaseModel has a validate)
        None, alias="validate",
        description="Measure the scores against subset policy updates (LDS; absent: off).",
    )
    queue: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "Kueue LocalQueue in the trace's namespace that admits its Jobs (unset: the operator's "
            "default queue, if any; none: Jobs start at once, without Kueue)."
        ),
    )

    @model_validator(mode="after")
    def _rules(self) -> InfluenceTraceSpec:
        check_rules(self, (STEPS_NEED_ROLLOUTS, STEP_PATHS_MATCH_STEPS, OUTPUT_ON_VOLUME,
                           OPTIMIZER_TARGET_ONE_OBJECTIVE))
        return self


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata a manifest may carry (the rest is the API server's)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field("trace", min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InfluenceTrace(ApiModel):
    """A whole manifest, as `kubectl apply` and `influence-trace run` take it."""

    api_version: Literal["influencetrace.dev/v1alpha1"] = Field(
        "influencetrace.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["InfluenceTrace"] = "InfluenceTrace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InfluenceTraceSpec
    status: dict[str, Any] | None = Field(None, description="Written by the operator; ignored here.")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and each bad field."""


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: the field path as written in the manifest, and what was expected."""
    lines = [f"{source}: invalid InfluenceTrace manifest"]
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(root)"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {path}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_manifest(data: Any, source: str = "manifest") -> InfluenceTrace:
    """Validate a decoded manifest; raise ManifestError with every bad field named."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a YAML mapping with apiVersion, kind, spec")
    try:
        return InfluenceTrace.model_validate(data)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, source)) from None


def load_manifest(path: str | Path) -> InfluenceTrace:
    """Read and validate a manifest file (YAML or JSON) holding one InfluenceTrace."""
    traces = load_manifests(path)
    if len(traces) > 1:
        raise ManifestError(f"{path}: holds {len(traces)} documents; this command takes one trace per "
                            "file (`influence-trace estimate` takes several)")
    return traces[0]


def load_manifests(path: str | Path) -> list[InfluenceTrace]:
    """Every InfluenceTrace of a file, documents separated by ``---`` as kubectl accepts them (empty
    documents skipped); errors name the file, and the document when there are several."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest ({err.strerror})") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from None
    if len(docs) <= 1:
        return [parse_manifest(docs[0] if docs else None, str(path))]
    return [parse_manifest(d, f"{path} (document {i})") for i, d in enumerate(docs, 1)]
