"""The CUDA paths the CPU tests cannot reach: pinned staging, the TF32 switch, the measured capture
batch and the running peak, the in-place response solve, one NCCL process group, and CUDA runs
against the float64 reference (both kernel strategies, the Gram path, and the default bf16/TF32
precision)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from influence_trace.demo.rollouts import make_rollouts
from influence_trace.planning import hessian_plan
from influence_trace.planning.hessian_plan import KERNELS_ENV
from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.capture import capture_factors
from influence_trace.trace.device_peak import run_peak
from influence_trace.trace.engine import frozen_weights, tf32_matmuls
from influence_trace.trace.ledger import MemoryLedger
from influence_trace.trace.projection import build_traced_modules, move_projections
from influence_trace.trace.selection import select_groups
from influence_trace.trace.solve import Factorization, solve_in_place
from influence_trace.trace.staging import CaptureStaging, Transfer
from transformers.models.qwen2 import modeling_qwen2

from tests.gpu import GPU
from tests.trace.bruteforce import load_model, read_rollouts, reference, settings, token_gradients
from tests.trace.numeric_helpers import assert_scores_close, run

pytestmark = GPU
CUDA = torch.device("cuda:0")


def test_pinned_staging_lands_device_rows_exactly() -> None:
    store = torch.zeros(12, 5, dtype=torch.bfloat16)
    st = CaptureStaging(capacity=6 * 5, dtype=torch.bfloat16, pin=True)
    assert all(s.is_pinned() for s in st.slots) and not store.is_pinned()
    batches = [torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([8, 9]), torch.tensor([6, 7, 10, 11])]
    values = [torch.randn(len(b), 5, device=CUDA) for b in batches]
    for dest, v in zip(batches, values, strict=True):
        st.begin(dest)
        st.put(store, v)
        st.end()
    st.finish()
    for dest, v in zip(batches, values, strict=True):
        assert torch.equal(store[dest], v.to(torch.bfloat16).cpu())


def test_transfer_round_trip_with_a_dtype_change_in_chunks() -> None:
    t = Transfer(chunk_bytes=4096, pin=True)
    assert all(s.is_pinned() for s in t.slots)
    host = torch.randn(1000, 37).to(torch.bfloat16)
    on_device = t.to_device(host, CUDA, torch.float32)
    assert on_device.dtype == torch.float32 and torch.equal(on_device.cpu(), host.float())
    back = t.to_host(on_device.to(torch.bfloat16))
    assert not back.is_pinned() and torch.equal(back, host)


@pytest.mark.parametrize("allow", [True, False])
def test_tf32_switch_changes_the_matmul_and_is_restored(allow: bool) -> None:
    g = torch.Generator(device=CUDA).manual_seed(0)
    a, b = (torch.randn(2048, 2048, device=CUDA, generator=g) for _ in range(2))
    exact = a.double() @ b.double()

    def error() -> float:
        return float(((a @ b).double() - exact).abs().max() / exact.abs().max())

    before = error()
    with tf32_matmuls(CUDA, allow):
        inside = error()
    assert error() == before  # the setting is restored (read through its effect, not a flag)
    # TF32 keeps 10 mantissa bits (relative error ~1e-3 over a 2048-long sum); FP32 keeps 23.
    assert (inside > 1e-4) if allow else (inside < 1e-5), inside


@pytest.fixture(scope="module")
def responses(tmp_path_factory: pytest.TempPathFactory):
    return read_rollouts(make_rollouts(tmp_path_factory.mktemp("rollouts") / "r.jsonl", seed=3))


def test_measured_capture_batch_running_peak_and_released_cache(tiny_model_dir: Path, responses) -> None:
    model = load_model(tiny_model_dir, torch.float32).to(CUDA)
    trace = settings(factor=4, capture_dtype="float32", hessian_dtype="float32")
    selection = select_groups(responses, trace)
    traced = build_traced_modules(model, list(trace.modules), trace.factor, trace.max_hessian_dim,
                                  trace.seed, torch.float32)
    move_projections(traced, CUDA)
    ledger = MemoryLedger()
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=CUDA)  # an earlier stage's peak...
    del big  # ...that the per-batch resets must not lose, and whose cached block capture releases
    options = WorkerOptions(device="cuda:0", capture_tokens=40, progress=False)
    with frozen_weights(model):
        factors = capture_factors(model, selection, traced, trace, options, ledger)
    measured = ledger.current["capture_batch"]  # on CUDA the measured peak replaces the estimate
    assert 0 < measured < 256 * 2**20
    assert run_peak(CUDA) >= 256 * 2**20
    assert torch.cuda.memory_reserved(CUDA) - torch.cuda.memory_allocated(CUDA) < 64 * 2**20
    cpu_model = load_model(tiny_model_dir, torch.float32)
    cpu_traced = build_traced_modules(cpu_model, list(trace.modules), trace.factor, trace.max_hessian_dim,
                                      trace.seed, torch.float32)
    with frozen_weights(cpu_model):
        want = capture_factors(cpu_model, selection, cpu_traced, trace,
                               WorkerOptions(device="cpu", capture_tokens=40, progress=False), MemoryLedger())
    for side, got in (("u", factors.u), ("v", factors.v)):
        for name, expected in getattr(want, side).items():
            assert not got[name].is_pinned()
            scale = float(expected.abs().max())
            assert scale > 0 and float((got[name] - expected).abs().max()) <= 1e-3 * scale, (side, name)


def test_in_place_solve_allocates_no_second_r_x_d() -> None:
    """cuBLAS solves into G.T (F-contiguous) itself: the device peak grows by far less than one R x D
    (bench/inplace_solve.py measures the same on the CPU)."""
    dim, count = 2048, 4096
    g = torch.Generator(device=CUDA).manual_seed(0)
    a = torch.randn(dim, dim, device=CUDA, generator=g)
    fact = Factorization(torch.linalg.cholesky(a @ a.T + dim * torch.eye(dim, device=CUDA)), 0.0, 0)
    del a
    solve_in_place(fact, torch.randn(count, dim, device=CUDA, generator=g))  # cuBLAS workspace, once
    grads = torch.randn(count, dim, device=CUDA, generator=g)
    want = torch.cholesky_solve(grads.T.double(), fact.chol.double()).T
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(CUDA)
    before, storage = torch.cuda.memory_allocated(CUDA), grads.data_ptr()
    solve_in_place(fact, grads)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated(CUDA) - before < count * dim * 4 // 8
    assert grads.data_ptr() == storage
    torch.testing.assert_close(grads.double(), want, rtol=1e-3, atol=1e-5)


def test_one_nccl_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """init_group creates the NCCL communicator eagerly (device_id) and a device all-reduce runs."""
    import torch.distributed as dist
    from influence_trace.run.distributed import close_group, init_group

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "INFLUENCE_TRACE_COLLECTIVE_TIMEOUT_S": "60"}.items():
        monkeypatch.setenv(key, value)
    group = init_group("cuda:0")
    try:
        assert (group.rank, group.world) == (0, 1)
        x = torch.full((4,), 2.0, device=CUDA)
        dist.all_reduce(x)
        assert torch.equal(x.cpu(), torch.full((4,), 2.0))
    finally:
        close_group()


def _rms_norm_in_input_dtype(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm, computed in float64 for a float64 input (transformers computes it in float32)."""
    dtype = hidden_states.dtype
    h = hidden_states.to(torch.promote_types(dtype, torch.float32))
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * h.to(dtype)


def _rotary_in_input_dtype(self, x: torch.Tensor, position_ids: torch.Tensor):
    """Qwen2RotaryEmbedding, in float64 for a float64 input (transformers computes it in float32)."""
    work = torch.promote_types(x.dtype, torch.float32)
    freqs = position_ids[..., None].to(work) * self.inv_freq.to(device=x.device, dtype=work)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


@pytest.fixture
def float64_throughout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float64 Qwen2 runs its RMSNorm and rotary embedding in float32 in transformers, so a CUDA run
    and the CPU reference differ by one or two float32 ulps there (CUDA and CPU kernels round
    differently), which the 1e-6 comparison cannot absorb (emulated on the CPU: +-1 ulp fails 3 of
    8 draws, +-2 ulps 8 of 8). Both sides run those steps in float64 instead, so 1e-6 bounds only
    float64 rounding (the CPU suite holds 1e-6 against the same brute force)."""
    monkeypatch.setattr(modeling_qwen2.Qwen2RMSNorm, "forward", _rms_norm_in_input_dtype)
    monkeypatch.setattr(modeling_qwen2.Qwen2RotaryEmbedding, "forward", _rotary_in_input_dtype)


@pytest.mark.parametrize("kernels", ["gpu", "cpu"])
@pytest.mark.parametrize("build", ["gram", "dense"])
@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
def test_cuda_run_matches_the_float64_reference(tiny_model_dir: Path, responses, float64_throughout,
                                                monkeypatch, scope: str, build: str, kernels: str) -> None:
    """Both kernel strategies on CUDA; ``gram`` puts every module on the Gram path (at factor 4 the
    tiny model's sides are all under MIN_GRAM_SIDE, so by default no module reaches it)."""
    monkeypatch.setenv(KERNELS_ENV, kernels)
    monkeypatch.setattr(hessian_plan, "MIN_GRAM_SIDE", 1 if build == "gram" else 10**9)
    trace = settings(factor=4, scope=scope)
    selection = select_groups(responses, trace)
    cpu_model = load_model(tiny_model_dir)
    ref = reference(token_gradients(cpu_model, selection, trace, False), selection, trace)
    options = WorkerOptions(device="cuda:0", chunk_bytes=4096, capture_tokens=40, progress=False)
    result = run(load_model(tiny_model_dir).to(CUDA), selection, trace, options)
    assert_scores_close(result.scores, ref.scores, 1e-6)
    assert all(np.isfinite(v).all() for v in result.scores.values())


# docs/algorithm.md: with the defaults (bfloat16 factors, float32 Hessian, TF32) scores agree with
# float64 to a few percent on the tiny model; tests/trace/test_precision.py emulates TF32 on the CPU.
DEFAULT_PRECISION_ERROR = 3e-2


@pytest.mark.parametrize("scope", ["per_prompt", "all_selected"])
def test_cuda_default_precision_stays_within_the_documented_error(tiny_model_dir: Path, responses,
                                                                  monkeypatch, scope: str) -> None:
    """The bf16 factors and the TF32 Gram GEMM as they run on CUDA (every module on the Gram path),
    against the float64 reference: largest error relative to the largest score."""
    monkeypatch.setattr(hessian_plan, "MIN_GRAM_SIDE", 1)
    ref_trace = settings(factor=4, scope=scope)
    selection = select_groups(responses, ref_trace)
    grads = token_gradients(load_model(tiny_model_dir), selection, ref_trace, False)
    ref = reference(grads, selection, ref_trace)
    trace = settings(factor=4, scope=scope, capture_dtype="bfloat16", hessian_dtype="float32")
    assert trace.tf32  # allowTf32 unset follows the bfloat16 factors
    options = WorkerOptions(device="cuda:0", capture_tokens=40, progress=False)
    got = run(load_model(tiny_model_dir, torch.float32).to(CUDA), selection, trace, options).scores
    scale = max(float(np.abs(v).max()) for v in ref.scores.values())
    error = max(float(np.abs(got[k] - ref.scores[k]).max()) for k in ref.scores) / scale
    assert error <= DEFAULT_PRECISION_ERROR, error
