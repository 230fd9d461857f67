"""The validation stage (spec.validate, trace/validation.py) in the memory and duration models.

Torch-free, shared by ``memory_model.estimate`` and ``duration.stage_seconds``. The stage runs on the
writer alone after the trace: models held below float32 are validated on a float32 copy, and every
mask is one update (a backward over the selected responses) and one evaluation of the objective (a
forward), ``subsets`` masks plus four (every token kept and the three 1% removals), plus one backward
for the sgd learning rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from influence_trace.api.architectures import ModuleDims
from influence_trace.api.spec import InfluenceTraceSpec, TrainingSpec

if TYPE_CHECKING:
    from influence_trace.planning.workload import Workload

EXTRA_MASKS = 4  # every token kept, top / bottom / random 1% removed
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


def work_dtype(model_dtype: str) -> str:
    """The dtype the stage runs in: float32 for models held below it, else the model's own."""
    return model_dtype if DTYPE_BYTES[model_dtype] >= 4 else "float32"


def validation_stage_bytes(spec: InfluenceTraceSpec, params: int, dims: list[ModuleDims],
                           batch_bytes: int) -> dict[str, int]:
    """The stage's own device buffers beside the model's weights: the float32 copy, the saved weights
    the update changes, their gradients, AdamW's moments (optimizer target) and one micro-batch
    (``batch_bytes``: the update's micro-batch in the working dtype)."""
    assert spec.validation is not None  # called only for a trace that validates
    item = DTYPE_BYTES[work_dtype(spec.model.dtype)]
    changed = params if spec.validation.target == "optimizer" else sum(d.in_features * d.out_features
                                                                        for d in dims)
    out = {"validate_copy": params * 4 if DTYPE_BYTES[spec.model.dtype] < 4 else 0,
           "validate_saved_weights": changed * item, "validate_gradients": changed * item,
           "validate_batch": batch_bytes}
    if spec.validation.target == "optimizer":
        out["validate_optimizer_states"] = 2 * params * item
    return out


def validation_flops(spec: InfluenceTraceSpec, params: int, w: Workload) -> float:
    """Forward 2 P and backward 4 P flops per token: per mask one update over the selected tokens
    (ppoEpochs passes for target optimizer) and the objectives' forwards (with leave-one-out each
    response's objective covers its whole scope: R_s x T_s tokens per scope)."""
    settings = spec.validation
    assert settings is not None  # called only for a trace that validates
    tokens = w.response_tokens + w.prompt_tokens
    passes = (spec.training or TrainingSpec()).ppo_epochs if settings.target == "optimizer" else 1
    evaluated = tokens
    if spec.trace.exclude_self_response:
        scopes = 1 if spec.trace.scope == "all_selected" else max(1, w.responses // max(1, w.scope_responses))
        per_scope = (w.responses, tokens) if spec.trace.scope == "all_selected" else (
            w.scope_responses, tokens * w.scope_responses // max(1, w.responses))
        evaluated = scopes * per_scope[0] * per_scope[1]
    masks = settings.subsets + EXTRA_MASKS
    per_mask = 6 * params * tokens * passes + 2 * params * evaluated
    return masks * per_mask + 6 * params * tokens
