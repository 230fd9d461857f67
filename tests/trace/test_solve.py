"""The response solve written over the gradients' storage, and HINV_DOT from its half-solve."""

from __future__ import annotations

import torch
from influence_trace.trace.solve import Factorization, solve_in_place


def test_solve_in_place_overwrites_g_with_the_solutions_and_gives_the_similarity() -> None:
    torch.manual_seed(0)
    dim, count = 40, 25
    a = torch.randn(dim, dim, dtype=torch.float64)
    damped = a @ a.T + 0.5 * torch.eye(dim, dtype=torch.float64)
    grads = torch.randn(count, dim, dtype=torch.float64)
    want = torch.linalg.solve(damped, grads.T).T  # w_r = H~^-1 g_r, row by row
    similarity = torch.full((count, count), 2.0, dtype=torch.float64)
    expected_similarity = 2.0 + grads @ want.T  # G H~^-1 G^T added to what was there
    storage = grads.data_ptr()
    solve_in_place(Factorization(torch.linalg.cholesky(damped), 0.5, 0), grads, similarity)
    assert grads.data_ptr() == storage and grads.is_contiguous()
    torch.testing.assert_close(grads, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(similarity, expected_similarity, rtol=1e-10, atol=1e-10)
