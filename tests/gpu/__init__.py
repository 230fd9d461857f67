"""CUDA-only tests (``pytest -m gpu``; bench/gpu_check.sh runs them first on a GPU machine)."""

import pytest
import torch

REASON = "needs a CUDA GPU (run bench/gpu_check.sh on a GPU machine; the CPU suite covers the rest)"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=REASON)]
