"""Fixtures for the model tests: small members (fast on CPU) and a small ensemble config."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def small_cfg():
    """The default front end (64 mels, 40 MFCCs, 126 frames) with narrow members."""
    from persemo.config import Config

    return Config().replace(model={"cnn_channels": [8, 16, 32], "cnn_hidden": 16, "lstm_hidden": 16,
                                   "lstm_layers": 2})


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    """Tiny models on a shared machine: one intra-op thread; several contend and run many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
