"""The README's seed table holds what `influence-trace estimate` predicts for the examples today."""

from __future__ import annotations

import json
import re

from tests.docs import blocks

_ROW = re.compile(r"^\| factor (\d+), (per_prompt|all_selected) \| ([\d.]+) GB \| (\d+) GB \| (\w+) \|", re.M)


def test_seed_table_matches_the_estimate() -> None:
    rows = _ROW.findall((blocks.REPO / "README.md").read_text())
    assert len(rows) == 4, "the README's seed table has changed shape"
    paths = [str(blocks.REPO / "examples" / f"qwen15b-f{f}-{scope.replace('_', '-')}.yaml")
             for f, scope, *_ in rows]
    proc = blocks.run_cli(["estimate", "--json", *paths], blocks.REPO)
    assert proc.returncode == 0, proc.stderr
    for (factor, scope, gpu, host, pool), answer in zip(rows, json.loads(proc.stdout), strict=True):
        predicted = (f"{answer['gpuBytes'] / 1e9:.1f}", f"{answer['hostBytes'] / 1e9:.0f}", answer["pool"])
        assert (gpu, host, pool) == predicted, f"README row factor {factor}, {scope}: estimate: {predicted}"
