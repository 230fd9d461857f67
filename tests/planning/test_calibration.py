"""Calibration: the prediction against the real worker on the CPU, measured, not assumed.

Each grid point runs the real pipeline on a small random Qwen2 (hidden 128, 2 layers) and compares
the memory model with (a) the worker's own ledger peak, within 10%, and (b) the peak RSS of a fresh
process, within 20%. The process baseline (Python, torch, transformers, the loaded model) is measured
here in its own fresh process, not hard-coded. On the CPU the "device" is host memory, so the RSS
covers weights, the capture batch, the stored factors and the Hessian-stage buffers together.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from influence_trace.api.spec import parse_manifest
from influence_trace.planning.memory_model import EstimateOptions, estimate, resolve_shapes, weight_bytes
from influence_trace.planning.workload import from_rollouts_file

from tests.conftest import manifest_dict

pytestmark = pytest.mark.slow

# factor x scope x hessianSource x dtype, as a half fraction (dtype alternates with the parity of the
# other three) so every level and every pair of levels appears within a few seconds per run.
LEVELS = list(itertools.product((4, 8), ("per_prompt", "all_selected"), ("token", "response")))
GRID = [(f, s, h, ("float32", "float64")[i % 2 ^ (f == 8)]) for i, (f, s, h) in enumerate(LEVELS)]

# The capture as the estimate's capture stage assumes it: every layer checkpointed, prompts not shared
# (the worker's own choices are checked against planning/capture_plan.py in
# tests/trace/test_shared_prompts.py).
AS_ESTIMATED = {"share_prompts": False, "checkpoint_layers": 1000}

# Peak RSS from VmHWM: it belongs to the address space, which exec replaces, whereas ru_maxrss is
# inherited across fork and exec and would report the (large) pytest parent's peak.
CHILD = """
import json, sys
from influence_trace.api.spec import load_manifest
def hwm():
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
manifest = load_manifest(sys.argv[2])
AS_ESTIMATED = json.loads(sys.argv[3])
if sys.argv[1] == "baseline":
    import transformers  # noqa: F401
    from influence_trace.io import model_io  # noqa: F401
    from influence_trace.run import pipeline  # noqa: F401
    from influence_trace.trace import engine  # noqa: F401
    model_io.load_model(manifest.spec.model, "cpu")
    print(json.dumps({"rss": hwm()}))
else:
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.pipeline import run_pipeline
    res = run_pipeline(manifest, WorkerOptions(progress=False, **AS_ESTIMATED))["resources"]
    print(json.dumps({"rss": hwm(), "ledger": res["ledger_peak_bytes"]}))
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from influence_trace.demo.rollouts import make_rollouts
    from influence_trace.demo.tiny_model import build_tiny_model

    d = tmp_path_factory.mktemp("calibration")
    build_tiny_model(d / "model", hidden_size=128, intermediate_size=256, num_layers=2)
    # One sequence length: capture batches are then cut by capture_tokens alone, as the estimate's
    # largest batch assumes; with mixed lengths the 10% padding bound cuts smaller ones (safe side).
    make_rollouts(d / "rollouts.jsonl", num_prompts=8, responses_per_prompt=8, response_len=(30, 31),
                  prompt_len=(7, 8))
    return d


def _manifest(d: Path, factor: int, scope: str, source: str, dtype: str) -> dict:
    return manifest_dict(d / "model", d / "rollouts.jsonl", d / f"out-{factor}-{scope}-{source}-{dtype}",
                         factor=factor, scope=scope, hessianSource=source, hessianDtype=dtype,
                         captureDtype=dtype)


def _child(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), json.dumps(AS_ESTIMATED)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("factor", "scope", "source", "dtype"), GRID)
def test_ledger_peak_within_10_percent(workdir: Path, factor: int, scope: str, source: str,
                                       dtype: str) -> None:
    from influence_trace.planning.options import WorkerOptions
    from influence_trace.run.pipeline import run_pipeline

    manifest = parse_manifest(_manifest(workdir, factor, scope, source, dtype))
    options = WorkerOptions(progress=False, **AS_ESTIMATED)
    measured = run_pipeline(manifest, options)["resources"]["ledger_peak_bytes"]
    est = estimate(manifest.spec, options=EstimateOptions(device="cpu"),
                   workload=from_rollouts_file(workdir / "rollouts.jsonl"))
    assert abs(est.ledger_bytes - measured) <= 0.10 * measured, (est.stages, measured)


@pytest.mark.parametrize(("factor", "scope", "source", "dtype"),
                         [(4, "all_selected", "token", "float64"), (8, "per_prompt", "response", "float32")])
def test_host_rss_within_20_percent(workdir: Path, factor: int, scope: str, source: str, dtype: str) -> None:
    data = _manifest(workdir, factor, scope, source, dtype)
    path = workdir / f"rss-{factor}-{scope}.yaml"
    path.write_text(yaml.safe_dump(data))
    baseline = _child("baseline", path)["rss"]
    measured = _child("run", path)["rss"]
    spec = parse_manifest(data).spec
    loaded = weight_bytes(resolve_shapes(spec), spec.model.dtype)  # the baseline already holds them
    est = estimate(spec, options=EstimateOptions(device="cpu", process_host_bytes=baseline - loaded),
                   workload=from_rollouts_file(workdir / "rollouts.jsonl"))
    print(f"\nRSS baseline {baseline / 1e6:.0f} MB, measured {measured / 1e6:.0f} MB, "
          f"predicted {est.host_bytes / 1e6:.0f} MB {est.host_breakdown}")
    assert abs(est.host_bytes - measured) <= 0.20 * measured
