"""Stage logprob_backward: one forward/backward per batch of responses, capturing projected factors.

For a traced Linear ``y = W x``, the gradient of the response objective with respect to W at position
p is ``delta_p x_p^T``. A forward hook takes ``v = P_in x`` at the positions ``p_t = P + t - 1`` that
predict the response tokens, and a tensor hook on the output takes ``u = P_out delta`` at the same
positions during the backward pass. Weights never get gradients (they are frozen: a leaf tensor on
the input embeddings carries the graph), and per-token gradients ``u v^T`` are never formed here.
Decoder layers and the log-probabilities run checkpointed (trace/lean_capture.py), so a batch holds
neither every layer's activations nor ``tokens x vocab`` logits; the hooks skip the recomputation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from influence_trace.api.architectures import shapes_and_dtype
from influence_trace.api.contract import InvalidInput
from influence_trace.api.progress import REPORTER
from influence_trace.api.spec import TraceSettings
from influence_trace.planning.memory_model import capture_batch_bytes, logit_chunk_tokens
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.device_peak import start_window
from influence_trace.trace.lean_capture import Recompute, checkpointed_layers, response_log_probs
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import TracedModule, project
from influence_trace.trace.selection import Selection
from influence_trace.trace.staging import CaptureStaging, release_cached_device_memory

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


def plan_batches(lengths: list[int], capture_tokens: int) -> list[list[int]]:
    """Indices grouped by sorted length so each batch pads to at most ``capture_tokens`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the newest member is the longest, so it sets the padded width
        if current and (len(current) + 1) * lengths[i] > capture_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


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
            store(factors.v[mod.name], project(rows_of(args[0]), mod.p_in))

            def grad_hook(grad: torch.Tensor) -> None:
                store(factors.u[mod.name], project(rows_of(grad), mod.p_out))

            if output.requires_grad:  # an output off the objective's graph has no gradient
                output.register_hook(grad_hook)

        return forward_hook

    def leaf_hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)

    handles = [model.get_input_embeddings().register_forward_hook(leaf_hook)]
    handles += [t.linear.register_forward_hook(capture_hook(t)) for t in traced]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _batch_tensors(selection_rows, idx: list[int], offsets: np.ndarray, device) -> tuple:
    """Right-padded input ids and mask, the captured positions, targets and destination rows."""
    seqs = [selection_rows[i].prompt_ids + selection_rows[i].response_ids for i in idx]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    rows_b, rows_p, targets, dest = [], [], [], []
    for b, (i, seq) in enumerate(zip(idx, seqs, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        plen, n = len(selection_rows[i].prompt_ids), selection_rows[i].num_tokens
        rows_b += [b] * n
        rows_p += range(plen - 1, plen - 1 + n)
        targets += selection_rows[i].response_ids
        dest += range(int(offsets[i]), int(offsets[i]) + n)
    dev = torch.device(device)
    return (
        ids.to(dev),
        mask.to(dev),
        _Batch(torch.tensor(rows_b, device=dev), torch.tensor(rows_p, device=dev), torch.tensor(dest)),
        torch.tensor(targets, device=dev),
    )


def estimate_batch_bytes(model: nn.Module, padded_tokens: int, response_tokens: int) -> int:
    """The memory model's prediction for one capture batch (checkpointed layers, one logit chunk).

    Used for the budget check before a batch; on CUDA the measured peak replaces it.
    """
    shapes, dtype = shapes_and_dtype(model)
    return capture_batch_bytes(shapes, padded_tokens, response_tokens, dtype)


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
    lengths = [len(r.prompt_ids) + r.num_tokens for r in responses]
    offsets = np.concatenate([[0], np.cumsum([r.num_tokens for r in responses])]).astype(np.int64)
    device = torch.device(options.device)
    on_cuda = device.type == "cuda"
    factors = allocate_factors(traced, int(offsets[-1]), offsets, trace)
    weights = response_weights(selection, trace)
    cdtype = compute_dtype(trace)
    batches = plan_batches(lengths, options.capture_tokens)
    state: dict = {"staging": staging_for(batches, responses, traced, trace, on_cuda),
                   "recompute": Recompute()}
    lm_head = model.get_output_embeddings()
    logit_chunk = logit_chunk_tokens(lm_head.out_features)
    measured = 0
    with _hooks(model, traced, factors, state, cdtype), checkpointed_layers(model):
        tokens = [sum(responses[i].num_tokens for i in idx) for idx in batches]
        for idx in REPORTER.track(_progress(batches, options.progress, "capture batches"), "capture", "batch",
                                  len(batches), tokens):
            ids, mask, batch, targets = _batch_tensors(responses, idx, offsets, device)
            estimate = estimate_batch_bytes(model, ids.numel(), len(targets))
            ledger.allocate("capture_batch", max(measured, estimate), STAGE)
            base = start_window(device)
            state["batch"] = batch
            state["staging"].begin(batch.dest)
            hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)[0]
            logp = response_log_probs(lm_head, hidden[batch.rows_b, batch.rows_p], targets, logit_chunk)
            coef = np.repeat(weights[idx], [responses[i].num_tokens for i in idx])
            objective = (logp * torch.as_tensor(coef, dtype=logp.dtype, device=device)).sum()
            with state["recompute"].backward():
                objective.backward()
            state["staging"].end()  # no wait here: the batch's copies land while the next one runs
            del hidden, logp, objective
            if on_cuda:
                measured = max(measured, torch.cuda.max_memory_allocated(device) - base)
                ledger.allocate("capture_batch", measured, STAGE)
        state["staging"].finish()
    del state
    release_cached_device_memory(device)
    return factors


def staging_for(batches: list[list[int]], responses, traced: list[TracedModule], trace: TraceSettings,
                pin: bool) -> CaptureStaging:
    """Double-buffered staging sized for the largest batch's response rows of every traced module."""
    rows = max((sum(responses[i].num_tokens for i in idx) for idx in batches), default=0)
    width = sum(t.dims.k_in + t.dims.k_out for t in traced)
    return CaptureStaging(rows * width, DTYPES[trace.capture_dtype], pin)


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)
