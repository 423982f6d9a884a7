"""Every benchmark times on one thread: with several, a busy machine's contention for cores (OpenMP threads
waiting for each other) swamps the differences being measured."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
