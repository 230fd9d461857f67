"""The traced modules and their random projections.

Projections are Rademacher matrices with entries +-1/sqrt(k), drawn on the CPU from a generator
seeded by a stable hash (sha256, not Python's salted ``hash``) of the module's name, the side and the
trace seed: the same seed gives the same matrices on any device, in any process, in any run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from influence_trace.api.architectures import ModuleDims, projection_dims
from influence_trace.api.contract import InvalidInput


@dataclass
class TracedModule:
    """One traced Linear: its sizes and its projections (None means identity, no matmul)."""

    dims: ModuleDims
    linear: nn.Linear
    p_in: torch.Tensor | None  # k_in x in_features, or None when k_in == in_features at factor 1
    p_out: torch.Tensor | None  # k_out x out_features, likewise

    @property
    def name(self) -> str:
        return self.dims.name


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def find_traced_linears(model: nn.Module, suffixes: list[str]) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear whose qualified name ends with one of ``suffixes``, in model order.

    A suffix that matches nothing is an InvalidInput: tracing fewer modules than asked for would
    silently change every score.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for suffix in suffixes:
        if not any(_matches(n, suffix) for n, _ in linears):
            examples = ", ".join(n for n, _ in linears[:8])
            raise InvalidInput(
                f"trace.modules: suffix {suffix!r} matches no nn.Linear of the model; "
                f"Linear modules found include: {examples}"
            )
    return [(n, m) for n, m in linears if any(_matches(n, s) for s in suffixes)]


def projection_seed(name: str, side: str, seed: int) -> int:
    """A 63-bit generator seed from the module name, the side ('in'/'out') and the trace seed."""
    digest = hashlib.sha256(f"{name}|{side}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rademacher(rows: int, cols: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A rows x cols matrix of +-1/sqrt(rows), generated on the CPU (device-independent)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    signs = torch.randint(0, 2, (rows, cols), generator=gen, dtype=torch.int8)
    return (signs.to(dtype) * 2 - 1) / rows**0.5


def projection_matrix(
    name: str, side: str, k: int, width: int, factor: int, seed: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """The projection for one side of a module; None (identity) when factor 1 leaves it full width."""
    if factor == 1 and k == width:
        return None
    return rademacher(k, width, projection_seed(name, side, seed), dtype)


def build_traced_modules(
    model: nn.Module,
    suffixes: list[str],
    factor: int,
    max_hessian_dim: int,
    seed: int,
    dtype: torch.dtype,
) -> list[TracedModule]:
    """Find the traced Linears, size them with ``projection_dims`` and draw their projections (CPU)."""
    traced = []
    for name, linear in find_traced_linears(model, suffixes):
        fin, fout = linear.in_features, linear.out_features
        k_in, k_out = projection_dims(fin, fout, factor, max_hessian_dim)
        p_in = projection_matrix(name, "in", k_in, fin, factor, seed, dtype)
        p_out = projection_matrix(name, "out", k_out, fout, factor, seed, dtype)
        traced.append(TracedModule(ModuleDims(name, fin, fout, k_in, k_out), linear, p_in, p_out))
    return traced


def move_projections(traced: list[TracedModule], device: torch.device | str) -> None:
    """Put every projection matrix on the device (declare ``projection_bytes`` first)."""
    for t in traced:
        t.p_in = None if t.p_in is None else t.p_in.to(device)
        t.p_out = None if t.p_out is None else t.p_out.to(device)


def project(rows: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    """rows (N x width) -> N x k; the identity when there is no projection matrix."""
    return rows if matrix is None else rows @ matrix.T


def projection_bytes(traced: list[TracedModule]) -> int:
    """Device bytes held by every module's projection matrices."""
    mats = [m for t in traced for m in (t.p_in, t.p_out) if m is not None]
    return sum(m.numel() * m.element_size() for m in mats)
