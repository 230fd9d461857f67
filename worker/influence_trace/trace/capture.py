"""Stage logprob_backward: one forward/backward per batch of responses, capturing projected factors.

For a traced Linear ``y = W x``, the gradient of the response objective with respect to W at position
p is ``delta_p x_p^T``. A forward hook takes ``v = P_in x`` at the positions ``p_t = P + t - 1`` that
predict the response tokens, and a tensor hook on the output takes ``u = P_out delta`` at the same
positions during the backward pass. Weights never get gradients (they are frozen: a leaf tensor on
the input embeddings carries the graph), and per-token gradients ``u v^T`` are never formed here.
The log-probabilities, and as many decoder layers as the memory model says the batch needs, run
checkpointed (trace/lean_capture.py), so a batch holds no ``tokens x vocab`` logits, and only the
layers' activations that fit; the hooks skip the recomputation. Each prompt runs once per batch,
forward only, and serves every response of its group (trace/shared_prompts.py); the hooks skip that
pass too, since no captured position is in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from influence_trace.api.contract import InvalidInput
from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.memory_model import logit_chunk_tokens
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace import shared_prompts
from influence_trace.trace.capture_planning import CapturePlan, estimate_batch_bytes, plan_capture
from influence_trace.trace.capture_planning import plan_batches as plan_batches  # the policy update's
from influence_trace.trace.device_peak import start_window
from influence_trace.trace.lean_capture import (
    Recompute,
    checkpointed_layers,
    response_log_probs,
)
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule, project
from influence_trace.trace.prompt_store import PromptStore, distinct_prompts
from influence_trace.trace.selection import Selection
from influence_trace.trace.staging import CaptureStaging, CopyStream, release_cached_device_memory

STAGE = "logprob_backward"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


@dataclass
class Factors:
    """Host factors per module: rows are response tokens in scope order."""

    u: dict[str, torch.Tensor]  # name -> T x k_out
    v: dict[str, torch.Tensor]  # name -> T x k_in
    token_offsets: np.ndarray  # R + 1 row offsets, response i owns rows [off[i], off[i+1])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.u, self.v) for t in d.values())


@dataclass
class _Batch:
    """What the hooks of one forward/backward need: which positions to take and where to put them."""

    rows_b: torch.Tensor  # batch index of each captured token (device)
    rows_p: torch.Tensor  # sequence position p_t of each captured token (device)
    dest: torch.Tensor  # destination row in the host factors (CPU)


def compute_dtype(trace: TraceSettings) -> torch.dtype:
    """Factors are projected in float32, or float64 when they are stored in float64."""
    return torch.float64 if trace.capture_dtype == "float64" else torch.float32


def response_weights(selection: Selection, trace: TraceSettings) -> np.ndarray:
    """Per response, the factor on each token's log-probability in f_r (mean/sum, times advantage)."""
    weights = []
    for group in selection.groups:
        for response, adv in zip(group.responses, group.advantages, strict=True):
            w = 1.0 / max(response.num_tokens, 1) if trace.loss_aggregation == "token_mean" else 1.0
            if trace.output_function == "log_prob_advantage":
                w *= float(adv)
            weights.append(w)
    return np.array(weights, dtype=np.float64)


def allocate_factors(traced: list[TracedModule], num_tokens: int, offsets: np.ndarray,
                     trace: TraceSettings) -> Factors:
    """Preallocated host buffers (the only host copy), in ordinary memory: copies from the device go
    through the small pinned staging buffer (trace/staging.py), never the store itself."""
    dtype = DTYPES[trace.capture_dtype]

    def empty(k: int) -> torch.Tensor:
        # Zeros, not empty: a position whose gradient hook never fires has delta = 0 by definition.
        return torch.zeros((num_tokens, k), dtype=dtype)

    return Factors(
        {t.name: empty(t.dims.k_out) for t in traced},
        {t.name: empty(t.dims.k_in) for t in traced},
        offsets,
    )


@contextmanager
def _hooks(model: nn.Module, traced: list[TracedModule], factors: Factors, state: dict,
           cdtype: torch.dtype) -> Iterator[None]:
    """Register the embedding leaf hook and the capture hooks for the duration of the block."""

    def rows_of(t: torch.Tensor) -> torch.Tensor:
        batch: _Batch = state["batch"]
        # A 2-D input already has one row per captured token, in capture order.
        # Detached first: the factors must not join (and keep alive) the graph, and inside a
        # checkpointed layer the first forward must save no more tensors than its recomputation.
        t = t.detach()
        rows = t if t.dim() == 2 else t[batch.rows_b, batch.rows_p]
        return rows.to(cdtype)

    def store(buffer: torch.Tensor, values: torch.Tensor) -> None:
        state["staging"].put(buffer, values)  # asynchronous on CUDA; lands in the store after the batch

    def capture_hook(mod: TracedModule):
        def forward_hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if state["recompute"].active:  # backward recomputing a checkpointed layer: stored already
                return
            if not torch.is_grad_enabled():  # the shared prompts' pass: no captured position in it
                return
            store(factors.v[mod.name], project(rows_of(args[0]), mod.p_in))

            def grad_hook(grad: torch.Tensor) -> None:
                store(factors.u[mod.name], project(rows_of(grad), mod.p_out))

            if output.requires_grad:  # an output off the objective's graph has no gradient
                output.register_hook(grad_hook)

        return forward_hook

    def leaf_hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not torch.is_grad_enabled():
            return None
        return output.detach().requires_grad_(True)

    handles = [model.get_input_embeddings().register_forward_hook(leaf_hook)]
    handles += [t.linear.register_forward_hook(capture_hook(t)) for t in traced]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_rows(responses) -> None:
    for r in responses:
        if not r.prompt_ids:
            raise InvalidInput(
                f"response {r.response_id!r} (row {r.row}): empty prompt; the first response token "
                "needs at least one prompt token to be predicted from"
            )


def capture_factors(model: nn.Module, selection: Selection, traced: list[TracedModule],
                    trace: TraceSettings, options: WorkerOptions, ledger: MemoryLedger) -> Factors:
    """Run every capture batch and return the filled host factors (stage logprob_backward)."""
    responses = selection.responses
    _check_rows(responses)
    offsets = selection.token_offsets
    device = torch.device(options.device)
    factors = allocate_factors(traced, int(offsets[-1]), offsets, trace)
    plan = plan_capture(model, responses, options, ledger)
    staging = staging_for(plan.batches, responses, traced, trace, device.type == "cuda", device)
    state: dict = {"staging": staging, "recompute": Recompute(), "measured": 0}
    store = None
    if plan.store_bytes:
        ledger.allocate("prompt_store", plan.store_bytes, STAGE)
        store = PromptStore()
        store.fill(model, distinct_prompts(responses), device, plan.capture_tokens)
    run = _BatchRunner(model, responses, offsets, response_weights(selection, trace), plan, device, ledger,
                       store)
    with _hooks(model, traced, factors, state, compute_dtype(trace)), \
            checkpointed_layers(model, plan.checkpointed):
        tokens = [sum(responses[i].num_tokens for i in idx) for idx in plan.batches]
        for idx in REPORTER.track(_progress(plan.batches, options.progress, "capture batches"), "capture",
                                  "batch", len(plan.batches), tokens):
            run(idx, state)
        state["staging"].finish()
    del state, run, store
    ledger.free("prompt_kv")
    ledger.free("prompt_store")
    release_cached_device_memory(device)
    return factors


@dataclass
class _BatchRunner:
    """One capture batch: inputs, the prompts' pass, the gradient pass, the objective's backward."""

    model: nn.Module
    responses: list
    offsets: np.ndarray
    weights: np.ndarray
    plan: CapturePlan
    device: torch.device
    ledger: MemoryLedger
    store: PromptStore | None = None

    def __call__(self, idx: list[int], state: dict) -> None:
        pin = self.device.type == "cuda"
        build = shared_prompts.shared_inputs if self.plan.share else shared_prompts.full_inputs
        inputs = build(self.responses, idx, self.offsets, self.device, pin)
        need = estimate_batch_bytes(self.model, inputs.shape(), self.plan.checkpointed)
        self.ledger.allocate("prompt_kv", need["prompt_kv"], STAGE)
        self.ledger.allocate("capture_batch", max(state["measured"], need["capture_batch"]), STAGE)
        base = start_window(self.device)
        state["batch"] = _Batch(inputs.rows_b, inputs.rows_p, inputs.dest)
        state["staging"].begin(inputs.dest)
        cache = shared_prompts.prefix_cache(self.model, inputs, self.plan.capture_tokens, self.store)
        hidden = shared_prompts.shared_forward(self.model, inputs, cache)
        lm_head = self.model.get_output_embeddings()
        logp = response_log_probs(lm_head, hidden[inputs.rows_b, inputs.rows_p], inputs.targets,
                                  logit_chunk_tokens(lm_head.out_features))
        coef: np.ndarray = np.repeat(self.weights[idx], [self.responses[i].num_tokens for i in idx])
        coef_t = shared_prompts.to_device(torch.as_tensor(coef, dtype=logp.dtype), self.device, pin)
        objective = (logp * coef_t).sum()
        with state["recompute"].backward():
            objective.backward()
        state["staging"].end()  # no wait here: the batch's copies land while the next one runs
        del hidden, logp, objective, cache
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - base - need["prompt_kv"]
            state["measured"] = max(state["measured"], peak)
            self.ledger.allocate("capture_batch", state["measured"], STAGE)


def staging_for(batches: list[list[int]], responses, traced: list[TracedModule], trace: TraceSettings,
                pin: bool, device: str | torch.device = "cuda") -> CaptureStaging:
    """Double-buffered staging sized for the largest batch's response rows of every traced module."""
    rows = max((sum(responses[i].num_tokens for i in idx) for idx in batches), default=0)
    width = sum(t.dims.k_in + t.dims.k_out for t in traced)
    copier = CopyStream(torch.device(device)) if pin else None
    return CaptureStaging(rows * width, DTYPES[trace.capture_dtype], pin, copier=copier)


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)
