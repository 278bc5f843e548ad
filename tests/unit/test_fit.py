"""`training.fit.torch_threads` and `head_threads`: how many torch threads a head trains on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from training.fit import head_threads, torch_threads


def test_torch_threads_restores_the_thread_count_even_on_error() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_configured_thread_count_is_taken_as_it_is() -> None:
    assert head_threads(3) == 3
    assert head_threads(1, step_macs=1e12) == 1


def test_a_small_head_trains_on_one_thread_without_looking_at_the_machine(monkeypatch) -> None:
    import psutil

    monkeypatch.setattr(psutil, "cpu_percent", lambda *a, **k: pytest.fail("sampled the CPUs"))
    assert head_threads(0, step_macs=64 * 32 * 32 * 4) == 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_auto_takes_one_thread_while_other_work_holds_the_cores() -> None:
    """Busy loops on every core: the head must not fight them with a thread per core."""
    cores = len(os.sched_getaffinity(0))
    loops = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<20: pass"]
        )
        for _ in range(cores)
    ]
    try:
        time.sleep(0.3)
        assert head_threads(0, step_macs=5e8, sample_s=0.5) == 1
    finally:
        for p in loops:
            p.kill()
            p.wait()
