"""Model ranking by average rank over metrics (thesis tables 3.5 / 3.7).

For each metric the models are ranked 1 (best) .. n; tied values share the mean of their
ranks (scipy's ``rankdata(method="average")``); a missing or NaN value ranks last. The
average rank is the mean over the metrics; lower is better. As in the thesis, ranking can
be done within groups (CNNs apart from transformers): pass ``groups``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["rank_models"]


def rank_models(
    rows: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    *,
    groups: Mapping[str, str] | None = None,
    lower_is_better: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """Rank models per metric and average the ranks.

    Args:
        rows: model name -> {metric: value}.
        metrics: the metrics to rank on (in table order).
        groups: model name -> group; ranks are computed inside each group. None: one group.
        lower_is_better: metrics where a smaller value is better (e.g. a loss).

    Returns:
        model name -> {metric: rank, ..., "average_rank": mean rank}, in the order of ``rows``.

    Example:
        >>> rank_models({"a": {"f1": .5}, "b": {"f1": .7}}, ["f1"])
        {'a': {'f1': 2.0, 'average_rank': 2.0}, 'b': {'f1': 1.0, 'average_rank': 1.0}}
    """
    names = list(rows)
    if not metrics:
        raise ValueError("rank_models needs at least one metric")
    groups = groups or {}
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    by_group: dict[str, list[str]] = {}
    for n in names:
        by_group.setdefault(groups.get(n, ""), []).append(n)
    for members in by_group.values():
        for m in metrics:
            sign = 1.0 if m in lower_is_better else -1.0
            vals = []
            for n in members:
                v = rows[n].get(m)
                v = float("nan") if v is None else float(v)
                vals.append(math.inf if math.isnan(v) else sign * v)
            ranks = rankdata(np.asarray(vals), method="average")
            for n, r in zip(members, ranks):
                out[n][m] = float(r)
    for n in names:
        out[n]["average_rank"] = float(np.mean([out[n][m] for m in metrics]))
    return out
