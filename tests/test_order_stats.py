"""Exact k-th smallest by counting passes (kerasxai.models.order_stats) against np.sort."""

import numpy as np
import pytest

import kerasxai  # noqa: F401  (sets the JAX backend default)
from kerasxai.models.order_stats import kth_smallest, nth_true_index, order_keys, sample_range

LO, HI = -(2**31), 2**31 - 1


def check(keys, ks, guess=None, lo=LO, hi=HI):
    """kth_smallest against np.sort for each k of ``ks`` (an int, or a (R, 1) array: one k a row)."""
    keys = np.asarray(keys, dtype=np.int32)
    for k in ks:
        kth, below, at_most = (np.asarray(v).reshape(-1) for v in kth_smallest(keys, k, lo, hi, guess=guess))
        want = np.sort(keys, axis=1)[np.arange(len(keys)), np.broadcast_to(k, (len(keys), 1))[:, 0] - 1]
        np.testing.assert_array_equal(kth, want, err_msg=f"k={k}")
        np.testing.assert_array_equal(below, (keys < want[:, None]).sum(1), err_msg=f"k={k}")
        np.testing.assert_array_equal(at_most, (keys <= want[:, None]).sum(1), err_msg=f"k={k}")


# 7, 15: all tail; 16, 1200: whole windows; 1209: windows and a tail; 38,809 (224 px): pair sums
# past 2^15; 70,000: past 2^16, no pair sums
@pytest.mark.parametrize("n", [7, 15, 16, 1200, 1209, 38809, 70000])
def test_exact_over_the_whole_int32_range(n):
    rng = np.random.default_rng(6)
    keys = rng.integers(LO, HI, size=(5, n), endpoint=True, dtype=np.int64)
    keys[0, :2] = [LO, HI]  # the extremes
    keys[1] = rng.integers(-3, 3, size=n)  # heavy ties
    keys[2] = HI  # all equal to the top
    keys[3] = LO
    check(keys, sorted({1, 2, max(1, n // 2), max(1, n - 1), n}))


def test_per_row_k_and_bounds():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 1000, size=(4, 300)).astype(np.int32)
    check(keys, [np.array([[1], [17], [150], [300]], np.int32)], lo=0, hi=999)


def test_any_guess_is_safe():
    """A guess that misses the k-th (or is empty, or outside the bounds) costs passes only."""
    rng = np.random.default_rng(8)
    keys = rng.integers(-(10**6), 10**6, size=(3, 500)).astype(np.int32)
    for g in [(0, 0), (10**5, 10**6), (-(10**9), -(10**8)), (5, -5), (LO, HI)]:
        guess = tuple(np.full((3, 1), v, np.int32) for v in g)
        check(keys, [1, 50, 250, 499, 500], guess=guess)


def test_sample_range_guess_on_attention_like_values():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(6, 197 * 4)) * 3
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    keys = np.asarray(order_keys(p.astype(np.float32)))
    check(keys, [1, 100, 700, 788], guess=sample_range(keys))


def test_nth_true_index():
    mask = np.array([[0, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], bool)
    count = np.array([[3], [1], [1]], np.int32)
    got = np.asarray(nth_true_index(mask, count)).reshape(-1)
    np.testing.assert_array_equal(got, [4, 0, 5])


def test_order_keys_sort_like_floats():
    v = np.array([[-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.004, 1.0, np.inf]], np.float32)
    keys = np.asarray(order_keys(v)).reshape(-1)
    assert np.all(np.diff(keys.astype(np.int64)) > 0)


@pytest.mark.parametrize("seed", range(4))
def test_nth_true_index_with_totals_matches_the_search(seed):
    """The one-pass cases (first, last, middle of three) and the search give the same index."""
    rng = np.random.default_rng(seed)
    rows, n = 8, 50
    mask = np.zeros((rows, n), bool)
    for r in range(rows):
        mask[r, rng.choice(n, size=rng.integers(1, 7), replace=False)] = True
    total = mask.sum(1, keepdims=True).astype(np.int32)

    def check_counts(count):
        want = np.array([np.flatnonzero(m)[c - 1] for m, c in zip(mask, count[:, 0])])
        np.testing.assert_array_equal(np.asarray(nth_true_index(mask, count, total)).reshape(-1), want)

    count = np.array([[rng.integers(1, t + 1)] for t in total[:, 0]], np.int32)
    check_counts(count)
    easy = (count == 1) | (count == total) | ((total == 3) & (count == 2))
    check_counts(np.where(easy, count, 1).astype(np.int32))  # every row one-pass
