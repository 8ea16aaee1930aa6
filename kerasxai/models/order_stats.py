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
search over all 2^32 keys. A pass's thresholds and counts are (R, FIELDS) arrays: with one
(R, 1) array a threshold, XLA ran ~38 separate ops a pass (now ~20), and the small ones' launch
costs on the CPU added up to about as much as the counting itself.
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
    """(R, n) -> ((R, m, WINDOW) whole windows, (R, n - m * WINDOW) tail).

    Slices instead of rows padded to whole windows: no padded copy of the keys for each search
    (the ties' search included); the tail (9 keys a row at 224) is counted on its own.
    """
    m = keys.shape[-1] // WINDOW
    return ops.reshape(keys[:, : m * WINDOW], (ops.shape(keys)[0], m, WINDOW)), keys[:, m * WINDOW :]


def _counts_at_most(windows, tail, thresholds):
    """Per row, how many keys are <= each threshold ((R, FIELDS) -> (R, FIELDS)): one pass."""
    packed = 0
    for j, shift in enumerate(FIELD_SHIFTS):
        hit = ops.cast(ops.less_equal(windows, thresholds[:, j, None, None]), "int32")
        packed = packed + (hit if shift == 0 else hit * (1 << shift))
    packed = ops.sum(packed, axis=-1)[:, :, None]  # (R, m, 1): field j counts the window's keys <= t_j
    mask = (1 << FIELD_BITS) - 1
    if windows.shape[1] * WINDOW < 2**16:
        # Fields j and j + 3 sit 16 bits apart: one reduction sums both (each total < 2^16).
        half = ops.convert_to_tensor(FIELD_SHIFTS[: FIELDS // 2], "int32")
        pairs = ops.sum(ops.bitwise_and(ops.right_shift(packed, half), mask | (mask << 16)), axis=1)
        high = ops.bitwise_and(ops.right_shift(pairs, 16), 0xFFFF)  # the sum may reach the sign bit
        counts = ops.concatenate([ops.bitwise_and(pairs, 0xFFFF), high], axis=-1)
    else:
        shifts = ops.convert_to_tensor(FIELD_SHIFTS, "int32")
        counts = ops.sum(ops.bitwise_and(ops.right_shift(packed, shifts), mask), axis=1)
    if tail.shape[-1]:
        counts = counts + ops.sum(ops.cast(ops.less_equal(tail[:, :, None], thresholds[:, None, :]), "int32"), axis=1)
    return counts


def _split(lo, hi, parts=FIELDS):
    """(R, parts) increasing int32 thresholds in [lo, hi] (lo <= hi, (R, 1) each), overflow-free.

    Wide intervals (hi - lo may not fit an int32) are split by a step computed from the
    halves; narrow ones exactly, the last thresholds clipped to hi.
    """
    j = ops.arange(1, parts + 1, dtype="int32")[None, :]
    half = ops.right_shift(hi, 1) - ops.right_shift(lo, 1)  # in [0, 2^31 - 1]
    span = hi - lo  # exact when narrow (unused otherwise)
    narrow = lo + ops.minimum(j * (span // (parts + 1) + 1) - 1, span)
    # Thresholds lo + j * step - 1 with step = 2 * s + 1, s = half // (parts + 1): parts * step - 1
    # <= hi - lo once half >= 36, and each partial sum of lo + j*s + j*s + (j - 1) stays in [lo, hi].
    js = j * (half // (parts + 1))
    wide = lo + js + js + (j - 1)
    return ops.where(ops.less(half, _SMALL_SPAN), narrow, wide)


def _split_guess(lo, hi):
    """Thresholds that test a guessed [lo, hi] itself (lo - 1 and hi) and split it in between."""
    below_lo = ops.where(ops.greater(lo, INT32_MIN), lo - 1, lo)
    return ops.concatenate([below_lo, _split(lo, hi, FIELDS - 2), hi], axis=-1)


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
    windows, tail = _windows(keys)

    def column(v):  # an int or a (R, 1) / broadcastable tensor -> (R, 1) int32
        if isinstance(v, numbers.Integral):
            return ops.full((rows, 1), int(v), "int32")
        return ops.cast(ops.broadcast_to(v, (rows, 1)), "int32")

    k, lo, hi = column(k), column(lo), column(hi)
    below, at_most = ops.zeros((rows, 1), "int32"), ops.full((rows, 1), n, "int32")

    def narrow(lo, hi, below, at_most, thresholds):
        # The thresholds increase and so do their counts: the k-th is above the last threshold
        # with fewer than k keys <= it, and <= the first with k or more.
        counts = _counts_at_most(windows, tail, thresholds)
        fewer = ops.less(counts, k)
        lo = ops.maximum(lo, ops.max(ops.where(fewer, thresholds + 1, INT32_MIN), axis=-1, keepdims=True))
        below = ops.maximum(below, ops.max(ops.where(fewer, counts, 0), axis=-1, keepdims=True))
        hi = ops.minimum(hi, ops.min(ops.where(fewer, INT32_MAX, thresholds), axis=-1, keepdims=True))
        at_most = ops.minimum(at_most, ops.min(ops.where(fewer, n, counts), axis=-1, keepdims=True))
        return lo, hi, below, at_most

    if guess is None:
        thresholds = _split(lo, hi)
    else:
        g_lo = ops.minimum(ops.maximum(column(guess[0]), lo), hi)
        g_hi = ops.maximum(ops.minimum(column(guess[1]), hi), g_lo)
        thresholds = _split_guess(g_lo, g_hi)

    def step(lo, hi, below, at_most, thresholds):  # a pass, and the next pass's thresholds
        lo, hi, below, at_most = narrow(lo, hi, below, at_most, thresholds)
        return lo, hi, below, at_most, _split(lo, hi)

    # Every pass, the first (the guess) included, runs inside the loop: outside it, XLA fused
    # the pass with the keys' producers and ran it 1.6x slower.
    lo, hi, below, at_most, _ = ops.while_loop(
        lambda lo, hi, *_: ops.any(ops.less(lo, hi)), step, (lo, hi, below, at_most, thresholds)
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


def last_equal_index(keys, value, count, total):
    """Per row, an index bound b such that exactly the first ``count`` entries of ``keys`` equal
    to ``value`` lie at indices <= b ((R, 1) int32 each; 1 <= count <= total, the rows' numbers
    of such entries).

    Rows that take all their equal entries (count == total) get b = n without a search. The
    others (ties at the rollout's k-th value: a block or two of a few images) are searched one
    row at a time with `nth_true_index`, so the work scales with those rows, not with all R.
    """
    n = keys.shape[-1]
    rows = ops.arange(ops.shape(keys)[0], dtype="int32")[:, None]

    def one_row(partial, bound):
        r = ops.cast(ops.argmax(ops.cast(partial[:, 0], "int32")), "int32")  # the first row left

        def row(v, width):
            return ops.slice(v, (r, 0), (1, width))

        index = nth_true_index(ops.equal(row(keys, n), row(value, 1)), row(count, 1), row(total, 1))
        this = ops.equal(rows, r)
        return ops.logical_and(partial, ops.logical_not(this)), ops.where(this, index, bound)

    _, bound = ops.while_loop(
        lambda partial, bound: ops.any(partial),
        one_row,
        (ops.less(count, total), ops.full(ops.shape(count), n, "int32")),
    )
    return bound

