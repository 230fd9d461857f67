"""Predicted peak memory of a trace: GPU bytes per process and host bytes per pod, with reasons.

The operator picks a node pool from this estimate before anything runs, so it imports no torch and
models the project's own worker (docs/memory-model.md), not the research pipeline that ran out of
memory: per-token gradients (T x D) never exist here. The worker's large buffers are the terms below,
named as the worker's ``MemoryLedger`` names them, so a run's ledger can be checked against them.

Two stages hold the device at different times:
  capture  weights + projections + one capture batch (activations kept for backward, logits)
  hessian  weights + projections + one module's factors and, per scope, the Hessian (built from
           chunks), its Cholesky factor and the scope's response gradients (solved in place)
The peak is the larger of the two; every category is reported either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from influence_trace.api.architectures import (
    PRESETS,
    ModuleDims,
    Shapes,
    read_config_shapes,
    traced_module_dims,
)
from influence_trace.api.spec import InfluenceTraceSpec, TraceSettings
from influence_trace.planning.hessian_plan import (
    CHUNK_BYTES,
    expansion_bytes,
    gpu_gram_bytes,
    gpu_pair_buffer_bytes,
    gram_bytes,
    kernels_for,
    pair_buffer_bytes,
    token_chunk_bytes,
    uses_symmetric_gram,
)

# The worker's own defaults; options.py imports no torch, so this module stays torch-free.
from influence_trace.planning.options import (  # DEFAULT_CHUNK_BYTES: re-exported (tests, bench)
    DEFAULT_CAPTURE_TOKENS,
    DEFAULT_CHUNK_BYTES,  # noqa: F401
    LOGIT_CHUNK_BYTES,
)
from influence_trace.planning.validation_plan import validation_stage_bytes, work_dtype
from influence_trace.planning.workload import Workload, resolve_workload

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
GIB = 2**30


# Per-process constants that are not the worker's own buffers (documented in docs/memory-model.md).
CUDA_CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS/cuSOLVER workspaces: outside max_memory_allocated
PROCESS_HOST_BYTES = 3 * GIB  # Python + torch + CUDA libraries + transformers, per worker process
ROLLOUT_BYTES_PER_TOKEN = 40  # a token id kept as a Python int in a tuple, plus its score
TRANSFER_CHUNK_BYTES = 64 * 2**20  # the worker's pinned transfer chunk (trace/staging.py keeps two)


class ShapesError(ValueError):
    """No shapes for the model; the message names the manifest fields that would give them."""


@dataclass(frozen=True)
class EstimateOptions:
    """The worker's run-time knobs and the per-process constants the estimate assumes."""

    device: Literal["cuda", "cpu"] = "cuda"
    chunk_bytes: int | None = None  # None: the kernel strategy's default (hessian_plan.CHUNK_BYTES)
    capture_tokens: int = DEFAULT_CAPTURE_TOKENS
    process_host_bytes: int = PROCESS_HOST_BYTES  # calibration passes the measured baseline
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    kernels: Literal["auto", "gpu", "cpu"] = "auto"  # the worker's INFLUENCE_TRACE_KERNELS; auto: by device

    @property
    def strategy(self) -> str:
        """"gpu" or "cpu": the kernel strategy the worker uses on this device."""
        return kernels_for(self.device, self.kernels)

    @property
    def chunk(self) -> int:
        """Hessian chunk bytes: as given, or the strategy's default."""
        return self.chunk_bytes or CHUNK_BYTES[self.strategy]


@dataclass(frozen=True)
class ModuleEstimate:
    """One traced module: projection sizes and its Hessian's bytes (0 without a Hessian)."""

    name: str
    k_in: int
    k_out: int
    dim: int
    hessian_bytes: int
    peak_bytes: int  # this module's Hessian-stage buffers at their largest


@dataclass(frozen=True)
class Estimate:
    """The prediction: peaks, what makes them up, and what was assumed to get them."""

    gpu_bytes: int  # per GPU process, CUDA context included
    host_bytes: int  # per pod
    gpu_breakdown: dict[str, int]  # every device category at its largest
    host_breakdown: dict[str, int]  # per pod
    stages: dict[str, int]  # device total of each stage; gpu_bytes is the largest plus the context
    modules: list[ModuleEstimate]
    largest_module: str
    workload: Workload
    shapes: Shapes  # the model's, resolved once: duration, history and placement read them from here
    tokens_per_gpu: int
    gpus: int
    assumptions: list[str] = field(default_factory=list)

    @property
    def ledger_bytes(self) -> int:
        """What the worker's MemoryLedger should peak at (the device peak without the CUDA context)."""
        return max(self.stages.values())

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda k: self.stages[k])


def resolve_shapes(spec: InfluenceTraceSpec) -> Shapes:
    """spec.model.architecture, else spec.model.preset, else config.json under spec.model.path."""
    arch = spec.model.architecture
    if arch is not None:
        return Shapes(
            arch.hidden_size, arch.intermediate_size, arch.num_layers, arch.num_attention_heads,
            arch.num_key_value_heads, arch.head_dim, arch.vocab_size, arch.tie_word_embeddings,
        )
    if spec.model.preset is not None:
        return PRESETS[spec.model.preset]
    shapes = read_config_shapes(spec.model.path)
    if shapes is None:
        raise ShapesError(
            f"spec.model: no shapes for the memory model: give spec.model.preset (one of "
            f"{', '.join(PRESETS)}) or spec.model.architecture, or make {spec.model.path}/config.json "
            "readable here"
        )
    return shapes


# ---- the worker's buffers, one function per ledger category ---------------------------------------


def weight_bytes(shapes: Shapes, model_dtype: str) -> int:
    """"weights": every parameter in the model's dtype, resident for the whole run."""
    return shapes.parameter_count() * DTYPE_BYTES[model_dtype]


def projection_bytes(dims: list[ModuleDims], factor: int, capture_dtype: str) -> int:
    """"projections": P_in (k_in x in) and P_out (k_out x out) per module, in the compute dtype.

    Factor 1 keeps a side at full width as the identity, with no matrix at all.
    """
    itemsize = 8 if capture_dtype == "float64" else 4
    total = 0
    for d in dims:
        if not (factor == 1 and d.k_in == d.in_features):
            total += d.k_in * d.in_features
        if not (factor == 1 and d.k_out == d.out_features):
            total += d.k_out * d.out_features
    return total * itemsize


def layer_activation_bytes_per_token(shapes: Shapes, model_dtype: str) -> int:
    """Saved-for-backward bytes per padded token in one decoder layer (frozen weights: no Linear saves
    its input, since its backward needs only W).

    In model-dtype elements: the two RMSNorms' float32 copies (4h), attention's q, k, v and output
    (flash or memory-efficient attention, no seq x seq matrix: 2q + 2kv, at least 4h) and the MLP's
    gate, SiLU output and up (3i). For Qwen2/Llama this is ``8h + 3i``; larger where q is wide.
    """
    h, i = shapes.hidden_size, shapes.intermediate_size
    q = shapes.num_attention_heads * shapes.head_dim
    kv = shapes.num_key_value_heads * shapes.head_dim
    return (4 * h + max(4 * h, 2 * q + 2 * kv) + 3 * i) * DTYPE_BYTES[model_dtype]


def activation_bytes_per_token(shapes: Shapes, model_dtype: str) -> int:
    """Per padded token with every decoder layer checkpointed (trace/lean_capture.py): each layer's
    input (h) kept through the forward, plus the embedding leaf, the final hidden states and their
    gradients (4h), and, during backward, one layer recomputed: its saved activations and as much
    again for their gradients."""
    h, item = shapes.hidden_size, DTYPE_BYTES[model_dtype]
    return (shapes.num_layers + 4) * h * item + 2 * layer_activation_bytes_per_token(shapes, model_dtype)


def logit_bytes_per_token(shapes: Shapes, model_dtype: str) -> int:
    """Per response position of one logit chunk: the logits in at least float32, the log-softmax and
    its gradient, plus the model-dtype output when the model computes in a narrower dtype."""
    item = DTYPE_BYTES[model_dtype]
    compute = max(item, 4)
    return shapes.vocab_size * (3 * compute + (item if item != compute else 0))


def logit_chunk_tokens(vocab_size: int) -> int:
    """Response positions per checkpointed log-probability chunk: float32 logits of at most
    LOGIT_CHUNK_BYTES (trace/lean_capture.py computes and recomputes one chunk at a time)."""
    return max(1, LOGIT_CHUNK_BYTES // (vocab_size * 4))


def capture_batch_bytes(shapes: Shapes, padded_tokens: int, response_tokens: int, model_dtype: str) -> int:
    """"capture_batch": one forward/backward with checkpointed layers and one logit chunk at a time."""
    logit_rows = min(response_tokens, logit_chunk_tokens(shapes.vocab_size))
    return (padded_tokens * activation_bytes_per_token(shapes, model_dtype)
            + response_tokens * shapes.hidden_size * DTYPE_BYTES[model_dtype] * 2  # gathered rows, grads
            + logit_rows * logit_bytes_per_token(shapes, model_dtype))


def generation_cache_bytes(shapes: Shapes, batch: int, tokens: int, model_dtype: str) -> int:
    """"generation_cache": one generate() batch's KV cache (keys and values of every layer for
    ``tokens`` positions) and the last step's float32 logits."""
    kv_per_token = 2 * shapes.num_layers * shapes.num_key_value_heads * shapes.head_dim
    return batch * (kv_per_token * tokens * DTYPE_BYTES[model_dtype] + shapes.vocab_size * 4)


def stored_factor_bytes(dims: list[ModuleDims], tokens: int, capture_dtype: str) -> int:
    """Host "factors": u (k_out) and v (k_in) per token and module, kept for the whole trace."""
    return tokens * sum(d.k_in + d.k_out for d in dims) * DTYPE_BYTES[capture_dtype]


def pinned_reservation(nbytes: int) -> int:
    """What torch's caching host allocator reserves for a pinned request: the next power of two."""
    return 1 << max(nbytes - 1, 0).bit_length() if nbytes > 0 else 0


def pinned_staging_bytes(dims: list[ModuleDims], batch_response_tokens: int, capture_dtype: str) -> int:
    """Host "pinned", per GPU process: two capture staging slots (one batch's factor rows of every
    module each) and two transfer chunks, as the pinned allocator reserves them. The factor store
    itself is ordinary memory (counted under "factors")."""
    slot = batch_response_tokens * sum(d.k_in + d.k_out for d in dims) * DTYPE_BYTES[capture_dtype]
    return 2 * pinned_reservation(slot) + 2 * pinned_reservation(TRANSFER_CHUNK_BYTES)


def exchange_bytes(dims: list[ModuleDims], tokens: int, capture_dtype: str, device: str) -> int:
    """"exchange" (several processes only): one round's owned module over every token, plus on CUDA
    this rank's pieces sent to the round's other owners (at most as many rows again). With the rounds
    overlapped, the next round's buffers ("exchange_ahead") are as large, beside a module's work."""
    widest = max((d.k_in + d.k_out for d in dims), default=0)
    return (2 if device == "cuda" else 1) * tokens * widest * DTYPE_BYTES[capture_dtype]


def received_staging_bytes(dims: list[ModuleDims], tokens: int, capture_dtype: str,
                           hessian_dtype: str) -> int:
    """The received rows becoming a module's "factors" (Hessian dtype): as they are when the capture
    dtype is the Hessian's; else converted a side at a time, the wider side (A) first, each received
    side dropped once converted: c (A + B) + s A, then c B + s (A + B), per token."""
    c, s = DTYPE_BYTES[capture_dtype], DTYPE_BYTES[hessian_dtype]

    def moment(d: ModuleDims) -> int:
        wide, narrow = max(d.k_in, d.k_out), min(d.k_in, d.k_out)
        if c == s:
            return s * (wide + narrow)
        return max(c * (wide + narrow) + s * wide, c * narrow + s * (wide + narrow))

    return tokens * max((moment(d) for d in dims), default=0)


def exchange_overlap_fits(room: int | None, module_peak: int, ahead: int) -> bool:
    """Whether the next exchange round may run beside a module's Hessian work: the module's peak and
    the round's buffers ("exchange_ahead") fit the room beside what is held (None: no limit known)."""
    return room is None or module_peak + ahead <= room


def chunk_tokens(scope_tokens: int, dim: int, itemsize: int, chunk_bytes: int) -> int:
    """Tokens per Hessian chunk, as the worker cuts them: at most chunk_bytes of g_t rows."""
    return max(1, min(scope_tokens, chunk_bytes // (dim * itemsize)))


def module_stage_bytes(d: ModuleDims, w: Workload, trace: TraceSettings, chunk_bytes: int,
                       kernels: str = "cpu") -> dict[str, int]:
    """One module's Hessian-stage buffers at their largest (ledger names), for the worst scope.

    per_prompt's worst scope is the largest group; all_selected's (and HINV_DOT's global Hessian)
    is every token. "response_grads" is the scope's R_s x D buffer: its gradients, solved in place.
    hessianMode identity needs no Hessian or Cholesky factor (unless HINV_DOT asks for its global one).
    ``kernels`` "gpu" (trace/kernels.py): the cyclic Gram (no expansion band) and "token_chunk", the
    chunk buffers of the batched response gradients and scoring.
    """
    s = DTYPE_BYTES[trace.hessian_dtype]
    dim = d.dim
    whole = trace.scope == "all_selected" or trace.debug_hessian_similarity
    scope_t = w.response_tokens if whole else w.scope_tokens
    scope_r = w.responses if whole else w.scope_responses
    out = {
        "factors": w.response_tokens * (d.k_in + d.k_out) * s,
        "response_grads": scope_r * dim * s,
    }
    if kernels == "gpu":
        out["token_chunk"] = token_chunk_bytes(scope_t, dim, s, chunk_bytes)
    if trace.hessian_mode == "identity" and not trace.debug_hessian_similarity:
        return out
    out["hessian"] = dim * dim * s
    out["cholesky"] = dim * dim * s
    if trace.hessian_source == "token" and uses_symmetric_gram(d.k_out, d.k_in) and kernels == "gpu":
        out["gram"] = gpu_gram_bytes(d.k_out, d.k_in, s)
        out["pairs"] = gpu_pair_buffer_bytes(scope_t, d.k_out, d.k_in, s, chunk_bytes)
    elif trace.hessian_source == "token" and uses_symmetric_gram(d.k_out, d.k_in):
        out["gram"] = gram_bytes(d.k_out, d.k_in, s)
        out["pairs"] = pair_buffer_bytes(scope_t, d.k_out, d.k_in, s, chunk_bytes)
        out["expansion"] = expansion_bytes(d.k_out, d.k_in, s)
    elif trace.hessian_source == "token":
        out["chunk"] = chunk_tokens(scope_t, dim, s, chunk_bytes) * dim * s
    return out


def module_peak(parts: dict[str, int]) -> int:
    """The largest moment of a module, over its phases in the worker's order: G with the pair buffers,
    G with H and an expansion band, H with a chunk (dense build), H with its Cholesky factor (factored
    out of place), L with the scope's response gradients formed after H is freed and solved in place.
    hessianSource response builds H from those gradients first (H with them: as large as L with
    them). Scoring adds only the structured contrast's few rows (trace/scoring.py), not counted; the
    GPU strategy forms the gradients through a "token_chunk" (scoring takes half of one)."""
    g = parts.get
    grads = parts["response_grads"]
    phases = (
        g("gram", 0) + g("pairs", 0),
        g("gram", 0) + g("hessian", 0) + g("expansion", 0),
        g("hessian", 0) + g("chunk", 0),
        g("hessian", 0) + g("cholesky", 0),
        g("cholesky", 0) + grads + g("token_chunk", 0),
        grads + g("token_chunk", 0),
    )
    return parts["factors"] + max(phases)


def resident_bytes(w: Workload, trace: TraceSettings) -> dict[str, int]:
    """Held through the whole Hessian stage: the float64 token scores (and the HINV_DOT matrix)."""
    out = {"token_scores": w.response_tokens * 8}
    if trace.debug_hessian_similarity:
        out["similarity"] = w.responses * w.responses * 8
    return out


def optimizer_state_bytes(shapes: Shapes, model_dtype: str) -> dict[str, int]:
    """"optimizer_states" (AdamW's two moments) and "master_weights" (float32 copies for models held
    below float32): resident from the first update on, on every process (not sharded)."""
    params = shapes.parameter_count()
    master = max(DTYPE_BYTES[model_dtype], 4)
    separate = DTYPE_BYTES[model_dtype] < 4
    return {"optimizer_states": 2 * params * master, "master_weights": params * master if separate else 0}


def update_stage_bytes(shapes: Shapes, model_dtype: str, capture: int, padded_tokens: int) -> dict[str, int]:
    """The update's own buffers: "gradients" (the model dtype's, plus float32 ones for masters) and one
    micro-batch: the capture batch plus what trainable Linears save, their inputs (per layer the
    attention input, o_proj's, the MLP input and down_proj's: 2h + q + i)."""
    params = shapes.parameter_count()
    item = DTYPE_BYTES[model_dtype]
    grads = params * item + (params * 4 if item < 4 else 0)
    q = shapes.num_attention_heads * shapes.head_dim
    inputs = shapes.num_layers * (2 * shapes.hidden_size + q + shapes.intermediate_size) * item
    return {"gradients": grads, "update_batch": capture + padded_tokens * inputs}


def add_update_stage(spec: InfluenceTraceSpec, shapes: Shapes, stages: dict[str, int],
                     breakdown: dict[str, int], capture: int, padded_tokens: int) -> None:
    """spec.training with updates: optimizer state is resident in every stage after the first update,
    and the ``update`` stage holds weights, optimizer state, gradients and one micro-batch."""
    training = spec.training
    if training is None or training.skip_optimizer_step:
        return
    resident = optimizer_state_bytes(shapes, spec.model.dtype)
    own = update_stage_bytes(shapes, spec.model.dtype, capture, padded_tokens)
    if training.steps > 1:
        for name in stages:
            stages[name] += sum(resident.values())
    stages["update"] = weight_bytes(shapes, spec.model.dtype) + sum(resident.values()) + sum(own.values())
    breakdown.update({**resident, **own})


def add_validation_stage(spec: InfluenceTraceSpec, shapes: Shapes, dims: list[ModuleDims],
                         stages: dict[str, int], breakdown: dict[str, int], capture: int,
                         padded_tokens: int) -> None:
    """spec.validate: the ``validate`` stage (planning/validation_plan.py): the weights, the stage's
    float32 copy and saved weights, gradients, and one update micro-batch in the working dtype."""
    if spec.validation is None:
        return
    dtype = work_dtype(spec.model.dtype)
    widen = max(1, DTYPE_BYTES[dtype] // DTYPE_BYTES[spec.model.dtype])
    batch = update_stage_bytes(shapes, dtype, capture * widen, padded_tokens)["update_batch"]
    own = validation_stage_bytes(spec, shapes.parameter_count(), dims, batch)
    stages["validate"] = weight_bytes(shapes, spec.model.dtype) + sum(own.values())
    breakdown.update(own)


# ---- putting it together -----------------------------------------------------------------------------


def _per_gpu(workload: Workload, gpus: int, nodes: int) -> Workload:
    """The capture pass is data parallel: each process sees its share of the rows (rounded up)."""
    n = gpus * nodes

    def share(x: int) -> int:
        return -(-x // n)

    return replace(workload, response_tokens=share(workload.response_tokens),
                   responses=share(workload.responses), prompt_tokens=share(workload.prompt_tokens))


def _padded_tokens(local: Workload, opts: EstimateOptions) -> int:
    longest = local.max_sequence_tokens
    return min(max(opts.capture_tokens, longest), local.responses * longest)


def _capture_stage(shapes: Shapes, local: Workload, spec: InfluenceTraceSpec, opts: EstimateOptions) -> int:
    """The largest capture batch: padded to capture_tokens, or one longest sequence on its own."""
    padded = _padded_tokens(local, opts)
    return capture_batch_bytes(shapes, padded, min(padded, local.response_tokens), spec.model.dtype)


def _host_pod(spec: InfluenceTraceSpec, w: Workload, dims: list[ModuleDims], shapes: Shapes,
              opts: EstimateOptions, device_peak: int) -> dict[str, int]:
    """Per pod: each process's baseline and weights copy, every stored factor, the rollouts."""
    procs = spec.resources.gpus
    pod_tokens = -(-w.response_tokens // spec.resources.nodes)
    out = {
        "process": procs * opts.process_host_bytes,
        "weights": procs * weight_bytes(shapes, spec.model.dtype),
        "factors": stored_factor_bytes(dims, pod_tokens, spec.trace.capture_dtype),
        "rollouts": procs * (w.response_tokens + w.prompt_tokens) * ROLLOUT_BYTES_PER_TOKEN,
    }
    if opts.device == "cpu":  # the device is the host: its buffers land here, weights counted once
        out["device"] = procs * (device_peak - weight_bytes(shapes, spec.model.dtype))
    else:
        batch = min(max(opts.capture_tokens, w.max_sequence_tokens), w.response_tokens)
        out["pinned"] = procs * pinned_staging_bytes(dims, batch, spec.trace.capture_dtype)
    return out


def estimate(spec: InfluenceTraceSpec, shapes: Shapes | None = None, options: EstimateOptions | None = None,
             workload: Workload | None = None) -> Estimate:
    """Predict the peak GPU bytes per process and host bytes per pod for ``spec``."""
    opts = options or EstimateOptions()
    shapes = shapes or resolve_shapes(spec)
    w = workload or resolve_workload(spec)
    trace = spec.trace
    dims = traced_module_dims(shapes, trace.modules, trace.factor, trace.max_hessian_dim)
    local = _per_gpu(w, spec.resources.gpus, spec.resources.nodes)
    fixed = {"weights": weight_bytes(shapes, spec.model.dtype),
             "projections": projection_bytes(dims, trace.factor, trace.capture_dtype)}
    capture = _capture_stage(shapes, local, spec, opts)
    parts = {d.name: module_stage_bytes(d, w, trace, opts.chunk, opts.strategy) for d in dims}
    modules = [_module_estimate(d, parts[d.name]) for d in dims]
    largest = max(modules, key=lambda m: m.peak_bytes)
    resident = resident_bytes(w, trace)
    stages = {"capture": sum(fixed.values()) + capture,
              "hessian": sum(fixed.values()) + sum(resident.values()) + largest.peak_bytes}
    several = spec.resources.gpus * spec.resources.nodes > 1
    exchange = exchange_bytes(dims, w.response_tokens, trace.capture_dtype, opts.device) if several else 0
    if exchange:  # a round of the factors' exchange between ranks, then its rows staged as the factors
        staging = received_staging_bytes(dims, w.response_tokens, trace.capture_dtype, trace.hessian_dtype)
        stages["exchange"] = sum(fixed.values()) + sum(resident.values()) + max(exchange, staging)
    gen = spec.rollouts.generate
    generation = 0
    if gen is not None:  # rank 0 samples the rollouts first, batch by batch, holding only the weights
        generation = generation_cache_bytes(shapes, gen.batch_size, w.max_sequence_tokens, spec.model.dtype)
        stages["generate"] = fixed["weights"] + generation
    context = opts.cuda_context_bytes if opts.device == "cuda" else 0
    gpu_breakdown = {**fixed, "generation_cache": generation, "capture_batch": capture, "exchange": exchange,
                     "exchange_ahead": exchange,
                     **parts[largest.name], **resident, "cuda_context": context}
    add_validation_stage(spec, shapes, dims, stages, gpu_breakdown, capture, _padded_tokens(local, opts))
    add_update_stage(spec, shapes, stages, gpu_breakdown, capture, _padded_tokens(local, opts))
    host = _host_pod(spec, w, dims, shapes, opts, max(stages.values()))
    return Estimate(
        gpu_bytes=max(stages.values()) + context,
        host_bytes=sum(host.values()),
        gpu_breakdown=gpu_breakdown,
        host_breakdown=host,
        stages=stages,
        modules=modules,
        largest_module=largest.name,
        workload=w,
        shapes=shapes,
        tokens_per_gpu=local.response_tokens,
        gpus=spec.resources.gpus,
        assumptions=_assumptions(spec, w, opts, stages["hessian"], exchange),
    )


def _module_estimate(d: ModuleDims, parts: dict[str, int]) -> ModuleEstimate:
    return ModuleEstimate(d.name, d.k_in, d.k_out, d.dim, parts.get("hessian", 0), module_peak(parts))


def _assumptions(spec: InfluenceTraceSpec, w: Workload, opts: EstimateOptions, hessian: int,
                 ahead: int) -> list[str]:
    out = [
        f"workload: {w.source}",
        f"capture pass data parallel over {spec.resources.gpus * spec.resources.nodes} processes; "
        "each module's Hessian work on one GPU with every token's factors",
        f"capture batches of at most {opts.capture_tokens} padded tokens; "
        f"Hessian chunks of at most {opts.chunk} bytes ({opts.strategy} kernel strategy)",
        "all rollouts counted as selected (skipped groups only lower the need)",
    ]
    if opts.device == "cuda":
        out.append(f"{opts.cuda_context_bytes} bytes of CUDA context per GPU; "
                   f"{opts.process_host_bytes} host bytes per process for Python, torch and CUDA")
    if ahead:
        out.append(f"exchange rounds overlap the Hessian work where the GPU has room for the next round's "
                   f"buffers (exchange_ahead, {ahead} bytes) beside the hessian stage ({hessian + ahead} "
                   "bytes together); elsewhere each round waits for the module before it (the stages "
                   "above are without the overlap, which placement does not ask for)")
    return out
