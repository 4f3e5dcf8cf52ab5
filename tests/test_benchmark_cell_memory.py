"""A cell's memory (:class:`~recgoat.benchmark.memory.PeakRSS`) is what the block itself needed, from its own start.

Why: the benchmark records each cell's peak and growth; checked only as ``start + growth == peak`` (true by the
definition), a PeakRSS that started from zero, or sampled nothing, passed. These tests allocate known amounts.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from recgoat.benchmark.memory import PeakRSS

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="PeakRSS reads /proc (Linux)")

MB = 2**20


def _touch(mb: int) -> np.ndarray:
    a = np.ones(mb * MB // 8)  # written: resident, not only reserved
    time.sleep(0.05)  # ten of the sampler's 5 ms periods with it held
    return a


@pytest.mark.parametrize("freed_inside", [False, True])
def test_growth_is_the_blocks_own_allocation(freed_inside):
    """200 MB touched in the block: its growth, whether still held at the end or freed before it (then only the
    sampler saw the peak)."""
    with PeakRSS() as m:
        a = _touch(200)
        if freed_inside:
            del a
            time.sleep(0.02)
    assert m.start_mb is not None and m.start_mb > 0  # the process's level, not zero
    assert 180 <= m.growth_mb <= 260, m.growth_mb
    assert m.peak_mb == pytest.approx(m.start_mb + m.growth_mb)


def test_a_later_block_starts_from_what_is_held_then_not_from_the_earlier_peak():
    """After a 200 MB block freed its array, a block allocating 20 MB grows by about 20 MB: freed memory handed
    back before it starts is not charged to it, and its start is below the earlier block's peak."""
    with PeakRSS() as big:
        a = _touch(200)
    del a
    with PeakRSS() as small:
        b = _touch(20)
    assert small.start_mb < big.peak_mb - 150, (small.start_mb, big.peak_mb)
    assert 15 <= small.growth_mb <= 60, small.growth_mb
    del b


def test_a_block_holding_memory_it_had_on_entry_grows_by_nothing_much():
    held = _touch(100)
    with PeakRSS() as m:
        time.sleep(0.05)
    assert m.start_mb >= 100  # the held array is in the starting level
    assert m.growth_mb < 20, m.growth_mb
    del held
