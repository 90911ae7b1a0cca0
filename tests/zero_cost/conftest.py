"""Fixtures of the zero-cost tests: a small NB201 benchmark network (1 cell per stage) and small batches."""
from __future__ import annotations

import pytest
import torch

from pipeline.spaces import get_space



@pytest.fixture(scope="module")
def small_space():
    """NB201 with one cell per stage: the same ops and blocks as N=5, a fifth of the compute."""
    return get_space("nb201", cells_per_stage=1)


@pytest.fixture(scope="module")
def small_data(prepared):
    """Two seeded batches of 8 real CIFAR-10 training images (32x32)."""
    from pipeline.zero_cost import load_proxy_data
    return load_proxy_data(prepared["shards"], "train", "cifar10", batch_size=8, num_batches=2, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One CPU thread: on a shared (oversubscribed) machine two threads made these networks ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
