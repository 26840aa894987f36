"""Fixtures the pruning tests share."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from pruning_helpers import ARCH, HPARAMS, quickstart_data

from sparse_transfer.transfer.loop import make_optimizer, train_epoch


@contextmanager
def one_thread():
    """The quickstart CNN is far too small for intra-op threads to help; on a shared machine
    they spin and wait for each other, and a test run takes ten times as long."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_per_module():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def pretrained():
    """A dense quickstart CNN pretrained on digits_0to4 as the zoo does (lr 0.05, 15 epochs).
    Tests prune deep copies of it."""
    torch.manual_seed(0)
    model = ARCH.build(5)
    images, labels = quickstart_data()
    optimizer = make_optimizer(model.parameters(), {**HPARAMS, "lr": 0.05})
    generator = torch.Generator().manual_seed(0)
    with one_thread():
        for _ in range(15):
            train_epoch(
                model, images, labels, optimizer, batch_size=64, generator=generator, augment=True
            )
    return model
