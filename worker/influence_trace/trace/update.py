"""Stage update_actor: the policy update of the traced objective, between two traced training steps.

The loss of a mini-batch B of selected responses is the negated advantage-weighted log-probability
(docs/algorithm.md, "Multi-step traces"):

    L_B = -(1/|B|) * sum_{r in B} A_r * agg_t log pi(y_t | x, y_<t)

with ``agg`` the trace's lossAggregation (token_mean or sum) and A_r the advantages the selection
formed (given, or group-normalised rewards). Each of ``ppoEpochs`` passes walks the mini-batches in
scope order and takes one AdamW step per mini-batch. Models held below float32 are updated through
float32 master weights, so small steps are not rounded away; float32 and float64 models are their own
masters. Several processes split each mini-batch into contiguous shares and all-reduce the summed
gradients before clipping, so every rank takes the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from influence_trace.api.spec import AdamWSpec, TrainingSpec
from influence_trace.trace.capture import plan_batches
from influence_trace.trace.records import Response
from influence_trace.trace.selection import Selection

STAGE = "update_actor"
GradReduce = Callable[[list[torch.Tensor]], None]  # sums each gradient over the ranks, in place
# Per response (scope order), a weight per response token on its loss term (None: every token 1);
# the validation stage (trace/validation.py) zeroes the tokens a subset leaves out.
TokenWeights = Sequence[np.ndarray] | None
ShareOf = Callable[[list[int]], list[int]]  # a mini-batch's response indices -> this rank's share


def response_coefficients(selection: Selection, loss_aggregation: str) -> np.ndarray:
    """Per selected response (scope order), the factor on each of its token log-probabilities: A_r / n_r
    (token_mean) or A_r (sum)."""
    coefs = []
    for group in selection.groups:
        for response, adv in zip(group.responses, group.advantages, strict=True):
            scale = 1.0 / max(response.num_tokens, 1) if loss_aggregation == "token_mean" else 1.0
            coefs.append(float(adv) * scale)
    return np.array(coefs, dtype=np.float64)


def minibatches(count: int, size: int) -> list[list[int]]:
    """Consecutive runs of ``size`` responses in scope order (size 0: one mini-batch of all)."""
    size = size or count
    return [list(range(a, min(a + size, count))) for a in range(0, count, size)]


class PolicyOptimizer:
    """AdamW over every parameter of the model, through float32 masters for half-precision models."""

    def __init__(self, model: nn.Module, settings: AdamWSpec) -> None:
        self.settings = settings
        self.named = [(n, p) for n, p in model.named_parameters()]  # tied weights appear once
        self.masters = [p if p.dtype in (torch.float32, torch.float64) else p.detach().float().clone()
                        for _, p in self.named]
        self.optimizer = torch.optim.AdamW(
            self.masters, lr=settings.lr, betas=tuple(settings.betas), eps=settings.eps,
            weight_decay=settings.weight_decay, foreach=False,
        )

    @property
    def separate_masters(self) -> bool:
        return any(m is not p for m, (_, p) in zip(self.masters, self.named, strict=True))

    def zero_grad(self) -> None:
        for _, p in self.named:
            p.grad = None
        for m in self.masters:
            m.grad = None

    def step(self, reduce: GradReduce | None) -> float:
        """Reduce, clip and apply the accumulated gradients; return the global norm before clipping."""
        grads = []
        for m, (_, p) in zip(self.masters, self.named, strict=True):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            m.grad = g if m is p else g.to(m.dtype)
            grads.append(m.grad)
        if reduce is not None:
            reduce(grads)
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.masters, clip))
        self.optimizer.step()
        with torch.no_grad():
            for m, (_, p) in zip(self.masters, self.named, strict=True):
                if m is not p:
                    p.copy_(m)
        self.zero_grad()
        return norm

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Masters (when separate) and the AdamW moments and step counts, by parameter name."""
        out: dict[str, torch.Tensor] = {}
        for m, (name, p) in zip(self.masters, self.named, strict=True):
            if m is not p:
                out[f"master/{name}"] = m.detach()
            state = self.optimizer.state.get(m)
            if state:
                out[f"exp_avg/{name}"] = state["exp_avg"]
                out[f"exp_avg_sq/{name}"] = state["exp_avg_sq"]
                out[f"step/{name}"] = torch.as_tensor(state["step"]).reshape(1)
        return {k: t.detach().cpu().contiguous() for k, t in out.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what state_tensors saved (after the model's weights were restored)."""
        with torch.no_grad():
            for m, (name, p) in zip(self.masters, self.named, strict=True):
                if m is not p:
                    m.copy_(tensors[f"master/{name}"])
                if f"step/{name}" in tensors:
                    self.optimizer.state[m] = _adam_state(tensors, name, m)

    def nbytes(self) -> dict[str, int]:
        """Bytes of gradients, AdamW moments and separate masters (the memory model's update stage)."""
        params = sum(p.numel() * p.element_size() for _, p in self.named)
        masters = sum(m.numel() * m.element_size() for m in self.masters)
        return {"gradients": params + (masters if self.separate_masters else 0),
                "optimizer_states": 2 * masters, "master_weights": masters if self.separate_masters else 0}


def _adam_state(tensors: dict[str, torch.Tensor], name: str, master: torch.Tensor) -> dict[str, torch.Tensor]:
    def moment(key: str) -> torch.Tensor:
        return tensors[f"{key}/{name}"].to(device=master.device, dtype=master.dtype).clone()

    return {"step": tensors[f"step/{name}"].reshape(()).clone(), "exp_avg": moment("exp_avg"),
            "exp_avg_sq": moment("exp_avg_sq")}


@dataclass
class _Micro:
    ids: torch.Tensor
    mask: torch.Tensor
    rows_b: torch.Tensor
    rows_p: torch.Tensor
    targets: torch.Tensor
    coefs: torch.Tensor  # per response token


def _micro(responses: Sequence[Response], idx: list[int], coefs: np.ndarray, device: torch.device,
           token_weights: TokenWeights = None) -> _Micro:
    seqs = [responses[i].prompt_ids + responses[i].response_ids for i in idx]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    rows_b: list[int] = []
    rows_p: list[int] = []
    targets: list[int] = []
    per_token: list[float] = []
    for b, (i, seq) in enumerate(zip(idx, seqs, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        plen, n = len(responses[i].prompt_ids), responses[i].num_tokens
        rows_b += [b] * n
        rows_p += range(plen - 1, plen - 1 + n)
        targets += responses[i].response_ids
        per_token += [float(coefs[i])] * n if token_weights is None else list(coefs[i] * token_weights[i])
    return _Micro(ids.to(device), mask.to(device), torch.tensor(rows_b, device=device),
                  torch.tensor(rows_p, device=device), torch.tensor(targets, device=device),
                  torch.tensor(per_token, dtype=torch.float64, device=device))


def _micro_batches(responses: Sequence[Response], idx: list[int], coefs: np.ndarray, device: torch.device,
                   capture_tokens: int, token_weights: TokenWeights = None) -> Iterator[_Micro]:
    """The responses ``idx`` in micro-batches of at most ``capture_tokens`` padded tokens."""
    for local in plan_batches([len(responses[i].prompt_ids) + responses[i].num_tokens for i in idx],
                              capture_tokens):
        yield _micro(responses, [idx[j] for j in local], coefs, device, token_weights)


def _token_log_probs(model: nn.Module, mb: _Micro) -> torch.Tensor:
    """log pi(y_t | y_<t) of every response token of the micro-batch (at least float32)."""
    hidden = model.base_model(input_ids=mb.ids, attention_mask=mb.mask, use_cache=False)[0]
    logits = model.get_output_embeddings()(hidden[mb.rows_b, mb.rows_p])
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1).gather(1, mb.targets[:, None])[:, 0]


@torch.no_grad()
def weighted_log_prob(model: nn.Module, responses: Sequence[Response], idx: list[int], coefs: np.ndarray,
                      device: torch.device, capture_tokens: int) -> float:
    """sum_{r in idx} coef_r * sum_t log p_t in float64 (the validation stage's objective)."""
    total = 0.0
    for mb in _micro_batches(responses, idx, coefs, device, capture_tokens):
        logp = _token_log_probs(model, mb)
        total += float((logp.double() * mb.coefs.to(logp.device)).sum())
    return total


def accumulate(model: nn.Module, responses: Sequence[Response], idx: list[int], coefs: np.ndarray,
               scale: float, device: torch.device, capture_tokens: int,
               token_weights: TokenWeights = None) -> float:
    """Add d(-scale * sum_{r in idx} coef_r * sum_t w_t log p_t)/d theta to the parameters' gradients
    (w_t from ``token_weights``, else 1), in micro-batches of at most ``capture_tokens`` padded tokens;
    return this share's loss."""
    if not idx:
        return 0.0
    total = 0.0
    for mb in _micro_batches(responses, idx, coefs, device, capture_tokens, token_weights):
        logp = _token_log_probs(model, mb)
        loss = -scale * (logp * mb.coefs.to(logp.dtype)).sum()
        loss.backward()
        total += float(loss.detach())
    return total


def update_policy(model: nn.Module, selection: Selection, training: TrainingSpec, loss_aggregation: str,
                  optimizer: PolicyOptimizer, device: str, capture_tokens: int,
                  reduce: GradReduce | None = None, share_of: ShareOf | None = None,
                  token_weights: TokenWeights = None) -> dict[str, float]:
    """``ppoEpochs`` passes of AdamW steps over the mini-batches; return what the step summary records.

    ``share_of`` picks this rank's part of a mini-batch and ``reduce`` sums the gradients over ranks
    (both None in a single process). ``token_weights`` scales each token's loss term (validation)."""
    responses = selection.responses
    coefs = response_coefficients(selection, loss_aggregation)
    batches = minibatches(len(responses), training.mini_batch_size)
    dev = torch.device(device)
    losses, norms = [], []
    model.eval()  # no dropout: the update's gradient is the traced objective's gradient
    optimizer.zero_grad()
    for _ in range(training.ppo_epochs):
        for batch in batches:
            mine = share_of(batch) if share_of is not None else batch
            loss = accumulate(model, responses, mine, coefs, 1.0 / len(batch), dev, capture_tokens,
                              token_weights)
            if reduce is not None:
                summed = torch.tensor([loss], dtype=torch.float64)
                reduce([summed])
                loss = float(summed[0])
            losses.append(loss)
            norms.append(optimizer.step(reduce))
    return {"optimizer_steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1],
            "grad_norm_first": norms[0], "grad_norm_max": max(norms), "learning_rate": training.optimizer.lr}
