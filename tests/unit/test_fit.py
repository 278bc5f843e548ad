"""`training.fit.single_thread`: heads train on one torch thread, the caller's setting comes back."""

from __future__ import annotations

import pytest
import torch

from training.fit import single_thread


def test_single_thread_restores_the_thread_count_even_on_error() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), single_thread():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
