"""An independent float64 reference for the token influence computation.

No hooks, no factors, no chunking, no contrast matrix. Every traced Linear ``y_p = W x_p`` is
replaced by per-position copies ``y_p = W_p x_p`` with ``W_p`` (one leaf tensor of shape
L x out x in) requiring grad, so autograd returns ``d f_r / d W_p = delta_p x_p^T`` exactly, for every
position at once. Projecting gives ``g_t = vec(P_out dW_{p_t} P_in^T)``; the Hessian is dense, the
damping follows docs/algorithm.md, solves are dense LU solves (no Cholesky), and scores are explicit
loops over the written formulas.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from influence_trace.api.architectures import projection_dims
from influence_trace.api.spec import TraceSettings
from influence_trace.trace.projection import projection_matrix
from influence_trace.trace.records import Response
from influence_trace.trace.selection import Selection
from pydantic.alias_generators import to_camel
from transformers import AutoModelForCausalLM

FLOAT64 = {"captureDtype": "float64", "hessianDtype": "float64"}


def settings(**fields: object) -> TraceSettings:
    """TraceSettings from snake_case keywords, on the float64 preset (captureDtype/hessianDtype)."""
    return TraceSettings.model_validate({**FLOAT64, **{to_camel(k): v for k, v in fields.items()}})


def load_model(path: Path, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def read_rollouts(path: Path) -> list[Response]:
    """Token-id rollouts written by ``make_rollouts`` as Response records."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [
        Response(r["prompt_id"], r["response_id"], tuple(r["prompt_ids"]), tuple(r["response_ids"]),
                 float(r["reward"]), r.get("advantage"), i)
        for i, r in enumerate(rows)
    ]


def traced_names(model: torch.nn.Module, suffixes: list[str]) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(n.endswith("." + s) for s in suffixes)]


def explicit_score(o: int, infl: np.ndarray, acc: np.ndarray, adv: np.ndarray, t: TraceSettings) -> float:
    """The score of a token of response o (docs/algorithm.md, "Scoring"), given infl[r] for every
    response r of the scope."""
    acc_ids = [r for r in range(len(acc)) if acc[r]]
    rej_ids = [r for r in range(len(acc)) if not acc[r]]
    sum_acc = sum(infl[r] for r in acc_ids)
    sum_rej = sum(infl[r] for r in rej_ids)
    n_acc, n_rej = len(acc_ids), len(rej_ids)
    if t.contrastive_agg == "sum":
        full = sum_acc - sum_rej
        excl = full - (1.0 if acc[o] else -1.0) * infl[o]
    elif t.contrastive_agg == "advantage":
        full = sum(adv[r] * infl[r] for r in range(len(acc)))
        excl = full - adv[o] * infl[o]
    else:
        full = sum_acc / n_acc - sum_rej / n_rej
        if acc[o]:
            excl = (sum_acc - infl[o]) / max(n_acc - 1, 1) - sum_rej / n_rej
        else:
            excl = sum_acc / n_acc - (sum_rej - infl[o]) / max(n_rej - 1, 1)
    if not t.exclude_self_response:
        return full
    a = t.self_influence_scale
    return (1 - a) * excl + a * full


def _projections(model: torch.nn.Module, name: str, t: TraceSettings,
                 unprojected: bool) -> tuple[np.ndarray, np.ndarray]:
    linear = model.get_submodule(name)
    fin, fout = linear.in_features, linear.out_features
    if unprojected:  # the exact definition: no projection matrices at all
        return np.eye(fin), np.eye(fout)
    k_in, k_out = projection_dims(fin, fout, t.factor, t.max_hessian_dim)
    mats = []
    for side, k, width in (("in", k_in, fin), ("out", k_out, fout)):
        m = projection_matrix(name, side, k, width, t.factor, t.seed, torch.float64)
        mats.append(np.eye(width) if m is None else m.numpy())
    return mats[0], mats[1]


def token_gradients(model: torch.nn.Module, selection: Selection, t: TraceSettings,
                    unprojected: bool = False) -> dict[str, list[np.ndarray]]:
    """Per module, per response: the n_r x D matrix of projected per-token gradients g_t."""
    responses = selection.responses
    advantages = np.concatenate([g.advantages for g in selection.groups])
    names = traced_names(model, list(t.modules))
    proj = {n: _projections(model, n, t, unprojected) for n in names}
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    model.requires_grad_(False)
    for resp, adv in zip(responses, advantages, strict=True):
        ids = torch.tensor([resp.prompt_ids + resp.response_ids])
        length, plen, n = ids.shape[1], len(resp.prompt_ids), resp.num_tokens
        copies = {}
        for name in names:
            linear = model.get_submodule(name)
            w = linear.weight.detach().expand(length, -1, -1).clone().requires_grad_(True)
            copies[name] = w
            linear.forward = _per_position(w, linear.bias)
        try:
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        finally:
            for name in names:
                del model.get_submodule(name).forward
        picked = torch.stack([logp[plen + i - 1, resp.response_ids[i]] for i in range(n)])
        f = picked.mean() if t.loss_aggregation == "token_mean" else picked.sum()
        if t.output_function == "log_prob_advantage":
            f = f * adv
        grads = torch.autograd.grad(f, [copies[nm] for nm in names])
        for name, dw in zip(names, grads, strict=True):
            p_in, p_out = proj[name]
            rows = [(p_out @ dw[plen + i - 1].numpy() @ p_in.T).reshape(-1) for i in range(n)]
            out[name].append(np.array(rows))
    return out


def _per_position(w: torch.Tensor, bias: torch.Tensor | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("loi,bli->blo", w, x)
        return y if bias is None else y + bias

    return forward


@dataclass
class Reference:
    scores: dict[str, np.ndarray]
    damping: dict[str, list[float]]
    hinv_dot: np.ndarray  # R x R, global Hessian per module, summed over modules


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """A dense float64 LU solve (torch's, which respects torch.set_num_threads on a shared machine)."""
    return torch.linalg.solve(torch.from_numpy(matrix), torch.from_numpy(np.ascontiguousarray(rhs))).numpy()


def _damped(tokens: np.ndarray, resp: np.ndarray, t: TraceSettings) -> tuple[np.ndarray, float]:
    rows = tokens if t.hessian_source == "token" else resp
    hess = sum(np.outer(g, g) for g in rows)
    dim = hess.shape[0]
    lam = t.reg_lambda if t.reg_lambda > 0 else 0.1 * np.trace(hess) / dim
    return hess + lam * np.eye(dim), lam


def reference(grads: dict[str, list[np.ndarray]], selection: Selection, t: TraceSettings) -> Reference:
    """Scores, damping per module and scope, and the HINV_DOT matrix from ``token_gradients``."""
    responses = selection.responses
    acc = np.concatenate([g.accepted for g in selection.groups])
    adv = np.concatenate([g.advantages for g in selection.groups])
    if t.scope == "all_selected":
        scopes = [list(range(len(responses)))]
    else:
        bounds = np.cumsum([0] + [len(g.responses) for g in selection.groups])
        scopes = [list(range(a, b)) for a, b in itertools.pairwise(bounds)]
    scores = {r.response_id: np.zeros(r.num_tokens) for r in responses}
    damping: dict[str, list[float]] = {}
    hinv = np.zeros((len(responses), len(responses)))
    for name, per_resp in grads.items():
        g_resp = np.array([m.sum(0) for m in per_resp])
        for members in scopes:
            tokens = np.concatenate([per_resp[i] for i in members])
            h_damped = None
            if t.hessian_mode != "identity":
                h_damped, lam = _damped(tokens, g_resp[members], t)
                damping.setdefault(name, []).append(lam)
            for o in members:
                rhs = per_resp[o].T  # D x n_o: the token gradients of response o
                infl = g_resp[members] @ (rhs if h_damped is None else _solve(h_damped, rhs))
                for tok in range(per_resp[o].shape[0]):
                    s = explicit_score(members.index(o), infl[:, tok], acc[members], adv[members], t)
                    scores[responses[o].response_id][tok] += s
        h_all, _ = _damped(np.concatenate(per_resp), g_resp, t)
        hinv += g_resp @ _solve(h_all, g_resp.T)
    return Reference(scores, damping, hinv)
