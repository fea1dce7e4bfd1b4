from __future__ import annotations

import pytest

from engram.embed.buckets import plan_buckets


def covered(runs: list[range], n: int) -> bool:
    return [i for r in runs for i in r] == list(range(n))


def test_equal_lengths_share_one_run() -> None:
    assert plan_buckets([20] * 30) == [range(0, 30)]


def test_very_different_lengths_run_apart_to_avoid_padding() -> None:
    runs = plan_buckets([10] * 8 + [200] * 2)
    assert runs == [range(0, 8), range(8, 10)]


def test_short_outlier_joins_a_run_when_padding_is_cheaper_than_a_run() -> None:
    assert plan_buckets([29, 30, 30, 30]) == [range(0, 4)]


def test_limits_hold_and_every_text_is_planned_once() -> None:
    lengths = sorted((7 * i) % 97 + 3 for i in range(500))
    runs = plan_buckets(lengths, max_rows=16, max_tokens=512)
    assert covered(runs, len(lengths))
    for r in runs:
        assert len(r) <= 16
        assert len(r) == 1 or len(r) * lengths[r[-1]] <= 512


def test_one_row_per_run() -> None:
    assert plan_buckets([5, 5, 9], max_rows=1) == [range(0, 1), range(1, 2), range(2, 3)]


def test_parts_spread_a_single_run_over_threads() -> None:
    runs = plan_buckets([32] * 40, parts=2)
    assert covered(runs, 40)
    assert len(runs) >= 2


def test_empty_and_unsorted_input() -> None:
    assert plan_buckets([]) == []
    with pytest.raises(ValueError, match="sorted"):
        plan_buckets([3, 2])
