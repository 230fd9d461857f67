"""Checkpoints of a multi-step trace: the weights and optimizer state after a step, beside the outputs.

``<output>/checkpoint-<N>/`` holds ``weights.safetensors`` (every parameter, in the model's dtype),
``optimizer.safetensors`` (AdamW moments and step counts, and float32 masters for half-precision
models) and, written last, ``checkpoint.json`` (the step and the trajectory's fingerprint). A folder
without ``checkpoint.json`` is an interrupted save and is ignored. A relaunched attempt loads the newest
complete checkpoint whose fingerprint matches and continues with the next step; older checkpoints are
removed once a newer one is complete, so at most one (plus one being written) exists.

The fingerprint covers what decides the weights after a step: the model files, and every setting of
the rollouts, trace and training except ``training.steps`` and ``training.checkpointEvery`` (raising the
step count continues a finished run instead of restarting it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from influence_trace.api.spec import InfluenceTraceSpec
from influence_trace.io.artifacts import model_identity
from influence_trace.io.atomic import write_atomically
from influence_trace.trace.update import PolicyOptimizer

log = logging.getLogger("influence_trace.run")
PREFIX = "checkpoint-"
MARKER = "checkpoint.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"


def trajectory(spec: InfluenceTraceSpec) -> dict[str, Any]:
    """What determines the weights after each step (see the module docstring)."""
    training = spec.training.model_dump(mode="json", by_alias=True, exclude={"steps", "checkpoint_every"}) \
        if spec.training else None
    return {
        "model": model_identity(spec.model.path),
        "model_dtype": spec.model.dtype,
        "rollouts": spec.rollouts.model_dump(mode="json", by_alias=True),
        "trace": spec.trace.model_dump(mode="json", by_alias=True),
        "training": training,
    }


def fingerprint(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _complete(output: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    found = []
    for folder in output.glob(f"{PREFIX}*"):
        marker = folder / MARKER
        if folder.is_dir() and marker.is_file():
            try:
                info = json.loads(marker.read_text())
                found.append((int(info["step"]), folder, info))
            except (ValueError, KeyError):
                log.warning("ignoring %s: unreadable marker", folder)
    return sorted(found, key=lambda item: item[0])


def save(output: Path, step: int, model: nn.Module, optimizer: PolicyOptimizer, recipe: str) -> Path:
    """Write checkpoint-<step> completely, then drop the older ones."""
    from safetensors.torch import save_file

    folder = output / f"{PREFIX}{step}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    write_atomically(folder / WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    state = optimizer.state_tensors()
    write_atomically(folder / OPTIMIZER, lambda tmp: save_file(state, str(tmp)))
    info = {"step": step, "fingerprint": recipe}
    write_atomically(folder / MARKER, lambda tmp: tmp.write_text(json.dumps(info) + "\n"))
    for older, path, _ in _complete(output):
        if older != step:
            shutil.rmtree(path, ignore_errors=True)
    return folder


def latest(output: Path, recipe: str, before: int) -> tuple[int, Path | None]:
    """(step, folder) of the newest complete checkpoint of this trajectory at a step below ``before``."""
    best: tuple[int, Path | None] = (0, None)
    for step, folder, info in _complete(output):
        if info.get("fingerprint") != recipe:
            log.warning("ignoring %s: made with other settings or another model", folder)
        elif step < before:
            best = (step, folder)
    return best


def load(folder: Path, model: nn.Module, optimizer: PolicyOptimizer) -> None:
    """Restore the weights, then the optimizer state, saved in ``folder``."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / WEIGHTS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
    optimizer.load_state_tensors(load_file(str(folder / OPTIMIZER)))
