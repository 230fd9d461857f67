"""What a process used: peak host and GPU memory, the device and library versions, for the summary."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch

from influence_trace.planning.options import WorkerOptions
from influence_trace.trace.device_peak import run_peak
from influence_trace.trace.kernels import strategy
from influence_trace.trace.ledger import MemoryLedger


def peak_host_bytes() -> int:
    """Peak resident set size of this process.

    Linux's VmHWM is this process's own high-water mark; ru_maxrss is kept across exec, so a worker
    started by a large parent (pytest, a launcher) would report the parent's peak. ru_maxrss is the
    fallback elsewhere (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_gpu_bytes(device: str) -> int:
    """Peak allocated device bytes of the whole run: a running maximum over capture's per-batch windows."""
    return run_peak(device)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"


def resources_used(options: WorkerOptions, ledger: MemoryLedger) -> dict[str, Any]:
    import transformers

    return {
        "peak_gpu_bytes": peak_gpu_bytes(options.device),
        "peak_host_bytes": peak_host_bytes(),
        "ledger_peak_bytes": ledger.peak_bytes,
        "ledger_peak_breakdown": dict(ledger.peak_breakdown),
        "gpu_budget_bytes": options.gpu_budget_bytes,
        "device": options.device,
        "device_name": device_name(options.device),
        "kernels": strategy(options.device),  # trace/kernels.py: which Hessian/scoring kernels ran
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
