"""Learned placement (planning/history.py): the rules, the bound, and ``estimate --history``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from influence_trace.api.spec import InfluenceTraceSpec, parse_manifest
from influence_trace.planning.history import (
    History,
    HistoryError,
    config_fields,
    config_key,
    learn,
    load_history,
    observation,
    parse_history,
    place_with_history,
)
from influence_trace.planning.memory_model import estimate
from influence_trace.planning.placement import DEFAULT_POOLS, place

H100, H200 = DEFAULT_POOLS
BIG = 2_500_000_000  # tokens: the model predicts ~81.7 GB (h200); half of it fits h100
ARCH = {"hiddenSize": 64, "intermediateSize": 128, "numLayers": 2, "numAttentionHeads": 4,
        "numKeyValueHeads": 2, "headDim": 16, "vocabSize": 1000}


def manifest(tokens: int = BIG, **trace: Any) -> dict[str, Any]:
    return {
        "apiVersion": "influencetrace.dev/v1alpha1", "kind": "InfluenceTrace", "metadata": {"name": "t"},
        "spec": {"model": {"path": "/m", "architecture": ARCH},
                 "rollouts": {"path": "/r.jsonl", "tokensEstimate": tokens},
                 "resources": {"pools": ["h100", "h200"]}, "trace": trace, "output": {"path": "/o"}},
    }


def spec_of(tokens: int = BIG, **trace: Any) -> InfluenceTraceSpec:
    return parse_manifest(manifest(tokens, **trace)).spec


def observe(spec: InfluenceTraceSpec, n: int, outcome: str = "Succeeded", pool=H200,
            measured: float | None = 0.5) -> Any:
    """An observation of ``spec`` measured at ``measured`` x the model's peak (None: no figure)."""
    est = estimate(spec)
    return observation(spec, est, id=f"uid-{n}/1", trace=f"t{n}", pool=pool.name,
                       pool_gpu_bytes=pool.gpu_memory_bytes, outcome=outcome, stage="hessian_solve",
                       measured_gpu_bytes=round(est.gpu_bytes * measured) if measured else None,
                       measured_host_bytes=None, context_bytes=est.gpu_bytes - max(est.stages.values()))


def history(*obs: Any) -> History:
    h = History()
    for o in obs:
        h.record(o)
    return h


def test_no_history_is_the_model() -> None:
    spec = spec_of()
    est, learned, chosen = place_with_history(spec, None)
    model_est, model_chosen = place(spec)
    assert learned.source == "model" and learned.reason == ""
    assert learned.estimate.gpu_bytes == est.gpu_bytes == model_est.gpu_bytes
    assert chosen.pool.name == model_chosen.pool.name == "h200"


def test_seen_key_uses_the_measured_peak_and_moves_to_the_smaller_pool() -> None:
    spec = spec_of()
    est = estimate(spec)
    _, learned, chosen = place_with_history(spec, history(observe(spec, 1)))
    assert learned.estimate.gpu_bytes == round(est.gpu_bytes * 0.5)
    assert learned.source == "observed (1 runs)" and learned.margin == 0.05
    assert f"observed {round(est.gpu_bytes * 0.5) / 1e9:.1f} GB peak in 1 run" in learned.reason
    assert chosen.pool.name == "h100" and "5% headroom" in chosen.reason


def test_largest_measurement_wins_and_tokens_scale_through_the_model() -> None:
    spec = spec_of()
    more = spec_of(3_000_000_000)
    h = history(observe(spec, 1, measured=0.5), observe(spec, 2, measured=0.6))
    learned = learn(more, estimate(more), h, 0.1)
    old, new = estimate(spec).gpu_bytes, estimate(more).gpu_bytes
    expected = round(round(old * 0.6) * new / old)
    assert learned.source == "observed (2 runs)"
    assert abs(learned.estimate.gpu_bytes - expected) <= 1


def test_gpu_oom_rules_out_that_pool_for_the_same_key() -> None:
    spec = spec_of(1000)  # the model says 1.1 GB: h100
    oom = observe(spec, 1, outcome="GPUOutOfMemory", pool=H100, measured=None)
    _, learned, chosen = place_with_history(spec, history(oom))
    assert chosen.pool.name == "h200"
    assert learned.min_pool_gpu_bytes == H100.gpu_memory_bytes
    assert "ran out of GPU memory on h100" in learned.reason
    fewer = spec_of(500)  # fewer tokens per process than the one that ran out: the model decides
    assert place_with_history(fewer, history(oom))[2].pool.name == "h100"
    more = spec_of(2000)
    assert place_with_history(more, history(oom))[2].pool.name == "h200"
    other = spec_of(1000, factor=16)  # another configuration: not ruled out
    assert place_with_history(other, history(oom))[2].pool.name == "h100"


def test_gpu_oom_on_the_largest_pool_leaves_no_pool() -> None:
    spec = spec_of(1000)
    oom = observe(spec, 1, outcome="GPUOutOfMemory", pool=H200, measured=None)
    _, _, chosen = place_with_history(spec, history(oom))
    assert chosen.pool is None and "no allowed pool has more GPU memory than 150.8 GB" in chosen.reason


def test_unseen_key_is_corrected_by_the_nearest_but_not_below_the_headroom_until_two_runs() -> None:
    seen = spec_of()
    unseen = spec_of(factor=16)
    key = config_key(config_fields(seen, estimate(seen)))
    assert key != config_key(config_fields(unseen, estimate(unseen)))
    model = estimate(unseen)
    one = learn(unseen, model, history(observe(seen, 1, measured=0.5)), 0.1)
    stage = model.peak_stage
    assert one.source == "model" and "nearest" in one.reason
    assert one.estimate.stages[stage] == round(model.stages[stage] * 0.9)  # clamped at 1 - headroom
    two = learn(unseen, model, history(observe(seen, 1, measured=0.5), observe(seen, 2, measured=0.5)), 0.1)
    ratio = two.estimate.stages[stage] / model.stages[stage]
    assert 0.45 < ratio < 0.55  # free to follow two runs: measured / predicted of the stage
    higher = learn(unseen, model, history(observe(seen, 1, measured=1.5)), 0.1)
    assert higher.estimate.gpu_bytes > model.gpu_bytes * 1.4  # an under-prediction raises at once


def test_another_model_teaches_nothing() -> None:
    other = manifest()
    other["spec"]["model"]["architecture"] = {**ARCH, "hiddenSize": 128}
    spec = parse_manifest(other).spec
    learned = learn(spec_of(), estimate(spec_of()), history(observe(spec, 1)), 0.1)
    assert learned.source == "model" and learned.reason == ""


def test_history_is_bounded_and_records_once() -> None:
    spec = spec_of()
    h = History()
    assert h.record(observe(spec, 1)) and not h.record(observe(spec, 1))
    for n in range(2, 10):
        h.record(observe(spec, n), limit=5)
    assert [o.id for o in h.observations] == [f"uid-{n}/1" for n in range(5, 10)]
    again = parse_history(h.to_json())
    assert again == h


def test_bad_history_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "h.json"
    bad.write_text('{"observations": [{"id": "x"}]}')
    with pytest.raises(HistoryError, match=r"h\.json: invalid history: observations\.0\.key"):
        load_history(bad)
    with pytest.raises(HistoryError, match="cannot read history"):
        load_history(tmp_path / "missing.json")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "influence_trace.cli", "estimate", *args],
                          capture_output=True, text=True)


def test_estimate_command_uses_an_exported_history(tmp_path: Path) -> None:
    path = tmp_path / "trace.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    before = json.loads(cli(str(path), "--json").stdout)
    assert before["pool"] == "h200" and before["source"] == "model"
    exported = tmp_path / "history.json"
    exported.write_text(history(observe(spec_of(), 1)).to_json())
    out = cli(str(path), "--json", "--history", str(exported))
    assert out.returncode == 0, out.stderr
    after = json.loads(out.stdout)
    assert after["pool"] == "h100" and after["source"] == "observed (1 runs)"
    assert after["gpuBytes"] == round(before["gpuBytes"] * 0.5)
    assert after["modelGpuBytes"] == before["gpuBytes"]
    assert after["seconds"] == sum(after["stageSeconds"].values()) > 30  # setup alone is 30 s
    table = cli(str(path), "--history", str(exported)).stdout
    assert "source: observed (1 runs)" in table and "time: about " in table and "on h100 (setup " in table
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = cli(str(path), "--history", str(broken))
    assert bad.returncode == 78 and "broken.json: invalid history" in bad.stderr


def test_durations_are_corrected_by_observed_runs() -> None:
    from influence_trace.planning.duration import predict, rates_of, stage_seconds

    spec = spec_of()
    est = estimate(spec)
    model = predict(spec, est, H100)
    assert model.seconds == sum(stage_seconds(spec, est, rates_of(H100)).values()) and model.note == ""
    assert predict(spec, est, H200).stages["capture"] == model.stages["capture"]  # same compute
    times = {"seconds": 3 * model.seconds, "predicted_seconds": model.seconds}
    slow = observe(spec, 1).model_copy(update=times)
    corrected = predict(spec, est, H100, history(slow))
    assert abs(corrected.seconds - 3 * model.seconds) < 1e-6 and corrected.model_seconds == model.seconds
    assert "x3.00 as observed in 1 run" in corrected.note
