"""Synthetic token-id rollouts for the tiny model: random prompts and responses with 0/1 rewards.

Used by the benchmarks and the tests (a GPU machine with only the package installed can run them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_rollouts(
    path: str | Path,
    num_prompts: int = 3,
    responses_per_prompt: int = 4,
    vocab_size: int = 80,
    prompt_len: tuple[int, int] = (3, 7),
    response_len: tuple[int, int] = (2, 9),
    seed: int = 0,
    with_advantage: bool = False,
) -> Path:
    """Write a JSONL of random token-id rollouts with 0/1 rewards (every group has contrast)."""
    rng = np.random.default_rng(seed)
    lines = []
    for p in range(num_prompts):
        prompt = rng.integers(3, vocab_size, rng.integers(*prompt_len)).tolist()
        rewards = rng.integers(0, 2, responses_per_prompt).astype(float)
        rewards[0], rewards[-1] = 1.0, 0.0  # guarantee contrast
        for r in range(responses_per_prompt):
            row = {
                "prompt_id": f"p{p}",
                "response_id": f"p{p}-r{r}",
                "prompt_ids": prompt,
                "response_ids": rng.integers(3, vocab_size, rng.integers(*response_len)).tolist(),
                "reward": float(rewards[r]),
            }
            if with_advantage:
                row["advantage"] = float(rng.normal())
            lines.append(json.dumps(row))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
