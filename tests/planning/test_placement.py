"""Pool tables from files, the choice, the refusal's suggestion, and the escalation order."""

from __future__ import annotations

from pathlib import Path

import pytest
from influence_trace.api.spec import load_manifest
from influence_trace.planning.memory_model import estimate
from influence_trace.planning.placement import (
    DEFAULT_POOLS,
    PoolsError,
    choose_pool,
    fit,
    load_pools,
    next_pool,
    place,
    suggest_after_oom,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qwen15b-f32-all-selected.yaml"
TABLE = """
headroom: 0.2
pools:
  - name: a100
    nodeSelector: {influencetrace.dev/pool: a100}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    gpuMemoryBytes: 42949672960
    gpusPerNode: 8
    hostMemoryBytes: 1099511627776
  - name: h200
    gpuMemoryBytes: 150754820096
    gpusPerNode: 8
    hostMemoryBytes: 2199023255552
"""


def spec(**trace):
    s = load_manifest(EXAMPLE).spec
    return s.model_copy(update={"trace": s.trace.model_copy(update=trace)})


def test_pool_table_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(TABLE)
    table = load_pools(path)
    assert [p.name for p in table.pools] == ["a100", "h200"] and table.headroom == 0.2
    assert table.pools[0].node_selector == {"influencetrace.dev/pool": "a100"}
    s = spec(factor=16)
    s = s.model_copy(update={"resources": s.resources.model_copy(update={"pools": None})})
    _, placement = place(s, table.pools, table.headroom)
    assert placement.pool.name == "h200"  # factor 16: 54.4 GB x 1.2 does not fit a 43 GB A100
    assert not placement.fits[0].fits and "GPU" in placement.fits[0].why


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("pools:\n  - name: x\n    gpusPerNode: 8\n    hostMemoryBytes: 1\n", "pools.0.gpuMemoryBytes"),
        ("pools:\n  - name: x\n    gpuMemoryBytes: -1\n    gpusPerNode: 8\n    hostMemoryBytes: 1\n",
         "pools.0.gpuMemoryBytes"),
        ("pools:\n  - {name: x, gpuMemoryBytes: 1, gpusPerNode: 1, hostMemoryBytes: 1, gpuMemory: 3}\n",
         "pools.0.gpuMemory"),
        ("pools: []\n", "pools"),
        ("pools: [\n", "not valid YAML"),
    ],
)
def test_bad_pool_files_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PoolsError) as err:
        load_pools(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_duplicate_pool_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    pool = "  - {name: h100, gpuMemoryBytes: 1, gpusPerNode: 1, hostMemoryBytes: 1}\n"
    path.write_text("pools:\n" + pool + pool)
    with pytest.raises(PoolsError, match="repeated: h100"):
        load_pools(path)


def test_refusal_names_a_factor_that_really_fits() -> None:
    s = spec(factor=4)
    _, placement = place(s)
    assert placement.pool is None
    assert "trace.factor" in placement.reason and "trace.maxHessianDim" in placement.reason
    factor = int(placement.reason.split("trace.factor ")[1].split()[0])
    h200 = DEFAULT_POOLS[1]
    assert fit(estimate(spec(factor=factor)), h200, 0.10).fits
    assert not fit(estimate(spec(factor=factor - 1)), h200, 0.10).fits
    dim = int(placement.reason.split("trace.maxHessianDim ")[1].split()[0])
    assert fit(estimate(spec(factor=4, max_hessian_dim=dim)), h200, 0.10).fits
    assert not fit(estimate(spec(factor=4, max_hessian_dim=dim + 1)), h200, 0.10).fits


def test_too_many_gpus_is_its_own_reason() -> None:
    s = spec()
    s = s.model_copy(update={"resources": s.resources.model_copy(update={"gpus": 16})})
    _, placement = place(s)
    assert placement.pool is None and "16 GPUs" in placement.reason


def test_smallest_allowed_pool_first_and_escalation_order() -> None:
    est = estimate(spec(factor=64))
    assert choose_pool(est).pool.name == "h100"
    assert choose_pool(est, allowed=["h200", "h100"]).pool.name == "h100"  # smallest first
    assert choose_pool(est, allowed=["h200"]).pool.name == "h200"
    assert next_pool("h100").name == "h200"
    assert next_pool("h200") is None
    assert next_pool("h100", allowed=["h100"]) is None
    with pytest.raises(PoolsError, match="unknown pool"):
        choose_pool(est, allowed=["tpu"])


def test_after_a_real_oom_the_suggestion_shrinks_the_estimate_by_the_shortfall() -> None:
    s = spec(factor=16)  # the Hessian stage is the peak here, so a larger factor helps
    before = estimate(s).gpu_bytes
    text = suggest_after_oom(s, DEFAULT_POOLS[1])
    assert f"predicted {before / 1e9:.1f} GB" in text
    factor = int(text.split("trace.factor ")[1].split()[0])
    assert estimate(spec(factor=factor)).gpu_bytes * 1.10 <= before
    assert estimate(spec(factor=factor - 1)).gpu_bytes * 1.10 > before
    dim = int(text.split("trace.maxHessianDim ")[1].split()[0])
    assert estimate(spec(factor=16, max_hessian_dim=dim)).gpu_bytes * 1.10 <= before
    assert estimate(spec(factor=16, max_hessian_dim=dim + 1)).gpu_bytes * 1.10 > before
