"""Resuming a trace: reuse the finished stages of an earlier run of the same manifest.

Two stages are stored as artifacts (artifacts.py) and reused when their recipe is unchanged:

- ``rollouts`` (stage gen): the generated rollouts, at ``spec.rollouts.path`` when given, else
  ``rollouts.parquet`` in the output directory. Recipe: every ``rollouts.generate`` setting, the trace
  seed, the model's dtype and files, and the prompts file's content.
- ``factors`` (stage logprob_backward), only with ``output.keepFactors``: the captured per-token
  factors, ``factors.safetensors`` in the output directory. Recipe: every trace setting that acts
  before or during capture (all but those in POST_CAPTURE), ``rollouts.maxPrompts``, the model's dtype
  and files, and the rollouts file's content. The Hessian and scoring settings are left out on purpose:
  changing the damping or the Hessian mode is exactly when reusing the factors pays.

The device and the worker options are not in any recipe: a relaunch on a larger GPU must reuse.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.generate import prompts
from influence_trace.generate import sampling as generation
from influence_trace.io import model_io
from influence_trace.io.artifacts import Artifact, file_identity, model_identity
from influence_trace.io.rollouts import rollouts_format
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.capture import Factors
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.selection import Selection
from influence_trace.trace.timing import StageTimer

log = logging.getLogger("influence_trace.run")
ROLLOUTS_FILE = "rollouts.parquet"
FACTORS_FILE = "factors.safetensors"
POST_CAPTURE = frozenset({
    "hessian_source", "hessian_mode", "reg_lambda", "exclude_self_response", "self_influence_scale",
    "hessian_dtype", "debug_hessian_similarity", "max_damping_retries",
})


def rollouts_destination(spec: InfluenceTraceSpec) -> Path:
    """Where generated rollouts are stored: ``rollouts.path`` when given, else in the output directory."""
    return Path(spec.rollouts.path) if spec.rollouts.path else Path(spec.output.path) / ROLLOUTS_FILE


def rollouts_artifact(spec: InfluenceTraceSpec, model: list[dict[str, Any]]) -> Artifact:
    gen = spec.rollouts.generate
    assert gen is not None, "only generated rollouts are an artifact"
    recipe = {
        "generate": gen.model_dump(mode="json", by_alias=True, exclude={"prompts_path"}),
        "prompts": file_identity(gen.prompts_path),
        "seed": spec.trace.seed,
        "model_dtype": spec.model.dtype,
        "model": model,
    }
    return Artifact("rollouts", rollouts_destination(spec), recipe)


def factors_artifact(spec: InfluenceTraceSpec, model: list[dict[str, Any]], rollouts_path: Path,
                     shard: tuple[int, int] | None = None) -> Artifact:
    """The captured factors; ``shard`` = (rank, world) names one rank's share of a multi-process run."""
    trace = spec.trace.model_dump(mode="json", by_alias=True, exclude=set(POST_CAPTURE))
    recipe = {
        "trace": trace,
        "max_prompts": spec.rollouts.max_prompts,
        "rollouts": file_identity(rollouts_path),
        "model_dtype": spec.model.dtype,
        "model": model,
    }
    name = FACTORS_FILE
    if shard is not None:
        recipe["shard"] = list(shard)
        name = FACTORS_FILE.replace(".safetensors", f".rank{shard[0]}-of-{shard[1]}.safetensors")
    return Artifact("factors", Path(spec.output.path) / name, recipe)


def write_factors(path: Path, factors: Factors) -> None:
    from safetensors.torch import save_file

    tensors = {f"u/{name}": t.contiguous() for name, t in factors.u.items()}
    tensors |= {f"v/{name}": t.contiguous() for name, t in factors.v.items()}
    tensors["token_offsets"] = torch.as_tensor(np.asarray(factors.token_offsets, dtype=np.int64))
    save_file(tensors, str(path))


def read_factors(path: Path) -> Factors:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    offsets = tensors.pop("token_offsets").numpy().astype(np.int64)
    u = {key[2:]: t for key, t in tensors.items() if key.startswith("u/")}
    v = {key[2:]: t for key, t in tensors.items() if key.startswith("v/")}
    return Factors(u, v, offsets)


class Resume:
    """This run's resumable stages: decides reuse, makes what is missing, and records both."""

    def __init__(self, spec: InfluenceTraceSpec, options: WorkerOptions, timer: StageTimer,
                 ledger: MemoryLedger, weights: dict[str, Any] | None = None) -> None:
        """``weights`` identifies weights that are not the model directory's (a later training step's);
        it joins the model's identity in every recipe."""
        self.spec, self.options, self.timer, self.ledger = spec, options, timer, ledger
        self.reused: dict[str, dict[str, Any]] = {}
        self.made: dict[str, dict[str, Any]] = {}
        self._model_identity: list[dict[str, Any]] | None = None
        self._weights = weights

    def model_identity(self) -> list[dict[str, Any]]:
        if self._model_identity is None:
            self._model_identity = model_identity(self.spec.model.path)
            if self._weights is not None:
                self._model_identity = [*self._model_identity, {"weights": self._weights}]
        return self._model_identity

    def rollouts(self, model: Any = None, tokenizer: Any = None) -> tuple[Any, Any]:
        """Stage gen: reuse or make the rollouts; return (model, tokenizer) when they were loaded.

        A given ``model`` (and ``tokenizer``) generates instead of one loaded from the model directory."""
        gen = self.spec.rollouts.generate
        if gen is None:
            return None, None
        with self.timer.stage("gen"):
            artifact = rollouts_artifact(self.spec, self.model_identity())
            state = artifact.state()
            if state == "ready":
                self.reused["rollouts"] = artifact.record()
                log.info("reusing the generated rollouts in %s (same settings and model)", artifact.path)
                return None, None
            self._check_overwrite(artifact, state)
            found = prompts.read_prompts(gen.prompts_path, gen.reward_column)
        with self.timer.stage("load_model"):
            if model is None:
                model = model_io.load_model(self.spec.model, self.options.device)
            if tokenizer is None:
                tokenizer = model_io.load_tokenizer(self.spec.model)
        with self.timer.stage("gen"):
            self._generate(artifact, found, model, tokenizer)
        return model, tokenizer

    def _check_overwrite(self, artifact: Artifact, state: str) -> None:
        """Never replace a file at the user's rollouts.path that generation did not make."""
        if state == "incomplete" and self.spec.rollouts.path:
            raise InvalidInput(
                f"spec.rollouts.path: {artifact.path} exists but was not made by generation (no "
                f"{artifact.marker_path.name} beside it); with rollouts.generate this path is where the "
                "generated rollouts are written, so move that file away or choose another path",
                "gen",
            )
        log.info("generating rollouts into %s (%s)", artifact.path, state)

    def _generate(self, artifact: Artifact, found: list[prompts.Prompt], model, tokenizer) -> None:
        gen = self.spec.rollouts.generate
        assert gen is not None  # stage gen runs only when the manifest generates
        chat = prompts.uses_chat_template(tokenizer, gen.use_chat_template)
        vocab = model_io.vocab_size(model)
        ids = [prompts.prompt_token_ids(p, tokenizer, chat, vocab) for p in found]
        eos = generation.eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        made = generation.generate(model, ids, gen, self.spec.trace.seed, eos, pad, self.options.device,
                                   self.ledger, self.options.progress)
        rows = generation.rollout_rows(found, ids, made, tokenizer)
        info = {
            "settings": artifact.recipe["generate"] | {"seed": self.spec.trace.seed},
            "chat_template_applied": chat,
            "eos_token_ids": eos,
            "prompts": len(found),
            "responses": len(rows),
            "mean_reward": float(np.mean([r["reward"] for r in rows])),
            "finished_by_eos": sum(r["finish_reason"] == "eos" for r in rows),
            "response_tokens": sum(len(r["response_ids"]) for r in rows),
        }
        fmt = rollouts_format(artifact.path)
        artifact.save(lambda tmp: generation.write_rollouts(tmp, rows, info, fmt), info)
        self.made["rollouts"] = artifact.record()
        log.info("generated %d responses for %d prompts (mean reward %.3f)", len(rows), len(found),
                 info["mean_reward"])

    def trace_hooks(self, rollouts_path: Path, selection: Selection,
                    shard: tuple[int, int] | None = None) -> dict[str, Any]:
        """Keyword arguments for run_trace: stored factors to use, or a callback that stores them.

        ``shard`` = (rank, world): ``selection`` is the share this rank of a multi-process run captures.
        """
        if not self.spec.output.keep_factors:
            return {}
        artifact = factors_artifact(self.spec, self.model_identity(), rollouts_path, shard)
        if artifact.exists():
            with self.timer.stage("load_factors"):
                factors = artifact.load(read_factors)
            if np.array_equal(factors.token_offsets, selection.token_offsets):
                self.reused["factors"] = artifact.record()
                log.info("reusing the captured factors in %s", artifact.path)
                return {"factors": factors}
            log.warning("stored factors in %s do not match the selected responses; capturing", artifact.path)

        def store(factors: Factors) -> None:
            with self.timer.stage("save_factors"):
                artifact.save(lambda tmp: write_factors(tmp, factors), {"bytes": factors.nbytes})
            self.made["factors"] = artifact.record()

        return {"on_captured": store}

    def summary(self) -> dict[str, Any]:
        """For summary.json: what was reused (empty when nothing) and what this run stored."""
        return {"reused": self.reused, "stored": self.made}
