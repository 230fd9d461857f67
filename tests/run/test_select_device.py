"""select_device: a one-process `--device cuda:N` run makes GPU N current, so synchronize_cuda (which
waits on the current device) times its own work."""

from __future__ import annotations

import pytest
import torch
from influence_trace.run.process import select_device


@pytest.mark.parametrize(("device", "selected"), [("cuda:1", [torch.device("cuda:1")]), ("cuda", []),
                                                  ("cpu", [])])
def test_select_device_sets_an_indexed_cuda_device(monkeypatch, device: str, selected: list) -> None:
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    select_device(device)
    assert calls == selected
