"""Train/val/test split by *group* (the source image, or a DeepPCB test/template pair).

All samples of one group land in one split, so no tile of an image (or of its template)
leaks across splits. Groups are sorted, shuffled with ``split_cfg.seed`` and cut by the
fractions (largest remainder rounding; a split with a non-zero fraction gets at least one
group when there are enough groups). A split may come out empty (too few images): that is
reported as a ``DataError`` only by the code that needs the split (``load_split``), so a tiny
dataset can still be prepared and trained without, e.g., a validation split.

Groups named in ``split_cfg.holdout`` take part in the cut (so the other groups land where they
would without it) but are then dropped from train and val: a model never sees them in training.
"""

from __future__ import annotations

import math

import numpy as np

from kerasxai.choices import Split

SPLITS = tuple(s.value for s in Split)  # train, val, test: the order of the split fractions


def split_counts(n_groups: int, fractions: list[float]) -> list[int]:
    """Groups per split: largest-remainder rounding, each non-zero fraction >= 1 when possible."""
    raw = [f * n_groups for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - counts[i], fractions[i]), reverse=True)
    for i in order[: n_groups - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def split_samples(samples, split_cfg) -> dict[str, list]:
    """``{"train": [...], "val": [...], "test": [...]}`` by group, deterministic in the seed."""
    groups = sorted({s.group for s in samples})
    rng = np.random.default_rng(int(split_cfg.seed))
    order = [groups[i] for i in rng.permutation(len(groups))]
    counts = split_counts(len(groups), [float(getattr(split_cfg, k)) for k in SPLITS])
    where, start = {}, 0
    for name, c in zip(SPLITS, counts):
        for g in order[start:start + c]:
            where[g] = name
        start += c
    holdout = {str(g) for g in (getattr(split_cfg, "holdout", None) or ())}
    unknown = sorted(holdout - set(groups))
    if unknown:
        from .sources import DataError

        raise DataError(f"data.split.holdout names '{unknown[0]}', which is not a group of this dataset "
                        f"(DeepPCB: a pair id such as '{groups[0]}'): fix or remove it.")
    out = {k: [] for k in SPLITS}
    for s in samples:
        split = where[s.group]
        if split == "test" or s.group not in holdout:
            out[split].append(s)
    return out
