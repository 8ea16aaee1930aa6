"""Exact per-row order statistics (the k-th smallest) with `keras.ops` only, fast on XLA's CPU.

The rollout's discard step needs, per image and block, the k-th smallest of T*T fused
attention entries (38,809 at 224). A sort or `top_k` is the obvious tool, but XLA's CPU sort
takes ~4 s for a batch of 32 ViT-Tiny images (12 blocks); counting instead is exact and needs
no data movement: the k-th smallest is the least t with at least k entries <= t.

Each counting pass compares every key with ``FIELDS`` (6) thresholds at once. The comparisons
of a ``WINDOW``-entry window (16 int32: one vector register) are summed into 5-bit fields of one
int32, so a pass writes 1/16 of the keys' size and splits the interval 7 ways (16-entry windows
ran a pass in half the time of 15-entry ones with 8 fields). The interval starts at a guess (a
strided sample's min and max: the k-th lies there unless the ratio is extreme, and a wrong
guess costs passes, never correctness) and a `while_loop` runs until every row is down to one
value: 8 passes for ViT-Tiny attention (trained or random init), against 16 for a static 4-way
search over all 2^32 keys.
"""

from __future__ import annotations

import numbers

from keras import ops

WINDOW = 16  # entries whose comparisons are summed into one field (a whole vector register)
FIELD_BITS = 5  # a window's count (<= 16) fits 5 bits
FIELD_SHIFTS = (0, 5, 10, 16, 21, 26)  # fields j and j + 3 sit 16 bits apart (see _counts_at_most)
FIELDS = len(FIELD_SHIFTS)  # thresholds per pass
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_SMALL_SPAN = 1 << 20  # below this half-width, hi - lo is computed exactly
_SAMPLE = 1024  # entries per row for the starting guess


def order_keys(values):
    """int32 keys with the same order as the float32 values (IEEE bit trick; -0.0 < +0.0)."""
    bits = ops.view(ops.cast(values, "float32"), "int32")
    return ops.where(ops.less(bits, 0), ops.bitwise_xor(bits, 0x7FFFFFFF), bits)


def _windows(keys):
    """(R, n) -> (R, m, WINDOW), padded at the end with the largest int32."""
    n = keys.shape[-1]
    m = -(-n // WINDOW)
    if m * WINDOW != n:
        keys = ops.pad(keys, ((0, 0), (0, m * WINDOW - n)), constant_values=INT32_MAX)
    return ops.reshape(keys, (-1, m, WINDOW))


def _counts_at_most(windows, thresholds, n):
    """Per row, how many keys are <= each of the ``FIELDS`` thresholds ((R, 1) each): one pass."""
    packed = 0
    for shift, t in zip(FIELD_SHIFTS, thresholds):
        hit = ops.cast(ops.less_equal(windows, t[:, :, None]), "int32")
        packed = packed + (hit if shift == 0 else hit * (1 << shift))
    packed = ops.sum(packed, axis=-1)  # (R, m): field j counts the window's keys <= t_j
    mask = (1 << FIELD_BITS) - 1
    half = FIELDS // 2
    if windows.shape[1] * WINDOW < 2**16:
        # Fields j and j + 3 sit 16 bits apart: one reduction sums both (each total < 2^16).
        counts = [None] * FIELDS
        for j in range(half):
            pair = ops.bitwise_and(ops.right_shift(packed, FIELD_SHIFTS[j]), mask | (mask << 16))
            pair = ops.sum(pair, axis=-1, keepdims=True)
            counts[j] = ops.bitwise_and(pair, 0xFFFF)
            counts[j + half] = ops.bitwise_and(ops.right_shift(pair, 16), 0xFFFF)
    else:
        counts = [
            ops.sum(ops.bitwise_and(ops.right_shift(packed, shift), mask), axis=-1, keepdims=True)
            for shift in FIELD_SHIFTS
        ]
    # The padding (the largest int32) only counts at that threshold, where all n keys do too.
    return [ops.minimum(c, n) for c in counts]


def _split(lo, hi, parts=FIELDS):
    """``parts`` increasing thresholds in [lo, hi] ((R, 1) int32 each, lo <= hi), overflow-free.

    Wide intervals (hi - lo may not fit an int32) are split by a step computed from the
    halves; narrow ones exactly, the last thresholds clipped to hi.
    """
    half = ops.right_shift(hi, 1) - ops.right_shift(lo, 1)  # in [0, 2^31 - 1]
    narrow = ops.less(half, _SMALL_SPAN)
    span = hi - lo  # exact when narrow (unused otherwise)
    q = span // (parts + 1) + 1
    step = 2 * (half // (parts + 1)) + 1  # parts * step - 1 <= hi - lo once half >= 36
    out = []
    wide = lo + (step - 1)
    for j in range(1, parts + 1):
        if j > 1:
            wide = wide + step  # stays in [lo, hi]: no intermediate overflows
        out.append(ops.where(narrow, lo + ops.minimum(j * q - 1, span), wide))
    return out


def _split_guess(lo, hi):
    """Thresholds that test a guessed [lo, hi] itself (lo - 1 and hi) and split it in between."""
    below_lo = ops.where(ops.greater(lo, INT32_MIN), lo - 1, lo)
    return [below_lo, *_split(lo, hi, FIELDS - 2), hi]


def kth_smallest(keys, k, lo=INT32_MIN, hi=INT32_MAX, guess=None):
    """Per row, the k-th smallest (1-based) of int32 ``keys`` (R, n), all in [lo, hi].

    Args:
        keys: (R, n) int32.
        k: int or (R, 1) int32, 1 <= k <= n.
        lo, hi: int or (R, 1) int32 bounds of every key of the row.
        guess: optional (lo, hi) pair of (R, 1) int32 where the k-th likely lies; the first
            pass splits it instead of [lo, hi].
    Returns (kth, below, at_most), each (R, 1) int32: the value, and how many keys are < it
    and <= it (so ties are at_most - below).
    """
    n = keys.shape[-1]
    rows = ops.shape(keys)[0]
    windows = _windows(keys)

    def column(v):  # an int or a (R, 1) / broadcastable tensor -> (R, 1) int32
        if isinstance(v, numbers.Integral):
            return ops.full((rows, 1), int(v), "int32")
        return ops.cast(ops.broadcast_to(v, (rows, 1)), "int32")

    k, lo, hi = column(k), column(lo), column(hi)
    below, at_most = ops.zeros((rows, 1), "int32"), ops.full((rows, 1), n, "int32")

    def narrow(lo, hi, below, at_most, thresholds):
        counts = _counts_at_most(windows, thresholds, n)
        for t, c in zip(thresholds, counts):  # the k-th is above every t with fewer than k keys <= t
            fewer = ops.less(c, k)
            lo, below = ops.where(fewer, t + 1, lo), ops.where(fewer, c, below)
        for t, c in zip(reversed(thresholds), reversed(counts)):  # ... and <= the first with k or more
            enough = ops.greater_equal(c, k)
            hi, at_most = ops.where(enough, t, hi), ops.where(enough, c, at_most)
        return lo, hi, below, at_most

    state = (lo, hi, below, at_most)
    if guess is not None:
        g_lo = ops.minimum(ops.maximum(column(guess[0]), lo), hi)
        g_hi = ops.maximum(ops.minimum(column(guess[1]), hi), g_lo)
        state = narrow(*state, _split_guess(g_lo, g_hi))
    lo, hi, below, at_most = ops.while_loop(
        lambda lo, hi, below, at_most: ops.any(ops.less(lo, hi)),
        lambda lo, hi, below, at_most: narrow(lo, hi, below, at_most, _split(lo, hi)),
        state,
    )
    return lo, below, at_most


def sample_range(keys):
    """(min, max) of a strided sample of each row ((R, 1) each): the starting guess."""
    stride = max(1, keys.shape[-1] // _SAMPLE)
    sample = keys[:, ::stride]
    return ops.min(sample, axis=-1, keepdims=True), ops.max(sample, axis=-1, keepdims=True)


def nth_true_index(mask, count, total=None):
    """Per row, the index of the ``count``-th ((R, 1), >= 1) True entry of the bool ``mask`` (R, n).

    With ``total`` (the rows' numbers of True entries, (R, 1)) the common cases take one pass:
    the first, the last, or the middle of three Trues (from the min, max and sum of their
    indices; ties at the rollout's k-th value are mostly 2 or 3 equal entries). Otherwise the
    count-th smallest index among the True entries, by the same counting search over the
    indices (False entries get index n, beyond the search): a cumsum would be the obvious
    tool, but XLA's CPU cumsum is a reduce-window, quadratic in the row length.
    """
    n = mask.shape[-1]
    index = ops.arange(n, dtype="int32")[None, :]

    def search():
        nth, _, _ = kth_smallest(ops.where(mask, index, n), count, 0, n)
        return nth

    if total is None:
        return search()

    def few():
        first = ops.min(ops.where(mask, index, n), axis=-1, keepdims=True)
        last = ops.max(ops.where(mask, index, -1), axis=-1, keepdims=True)
        middle = ops.sum(ops.where(mask, index, 0), axis=-1, keepdims=True) - first - last
        return ops.where(ops.equal(count, 1), first, ops.where(ops.equal(count, total), last, middle))

    easy = ops.logical_or(
        ops.logical_or(ops.equal(count, 1), ops.equal(count, total)),
        ops.logical_and(ops.equal(total, 3), ops.equal(count, 2)),
    )
    return ops.cond(ops.all(easy), few, search)
