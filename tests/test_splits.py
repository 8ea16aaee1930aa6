"""Splits by group: no leakage, fractions, seeds, DeepPCB pairs together."""

from collections import Counter

import pytest

from kerasxai.config import DataConfig, SplitConfig
from kerasxai.data.sources import Sample, read_samples
from kerasxai.data.splits import split_counts, split_samples


def _samples(n_groups, per_group=3):
    return [Sample(f"g{g}_{i}", f"g{g}", f"/x/g{g}_{i}.png") for g in range(n_groups) for i in range(per_group)]


def test_no_group_in_two_splits_and_fractions():
    samples = _samples(100)
    out = split_samples(samples, SplitConfig())
    groups = {k: {s.group for s in v} for k, v in out.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert [len(groups[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(s.id for v in out.values() for s in v) == sorted(s.id for s in samples)  # nothing lost


def test_seeded_and_seed_changes_assignment():
    samples = _samples(50)
    a = split_samples(samples, SplitConfig(seed=1))
    b = split_samples(list(reversed(samples)), SplitConfig(seed=1))  # order of listing does not matter
    assert {s.id for s in a["test"]} == {s.id for s in b["test"]}
    c = split_samples(samples, SplitConfig(seed=2))
    assert {s.id for s in a["test"]} != {s.id for s in c["test"]}


def test_small_datasets_give_each_split_a_group_when_possible():
    assert split_counts(3, [0.7, 0.1, 0.2]) == [1, 1, 1]
    assert split_counts(10, [0.7, 0.1, 0.2]) == [7, 1, 2]
    assert split_counts(1, [0.7, 0.1, 0.2]) == [1, 0, 0]  # the empty split is reported when used
    assert split_counts(7, [1.0, 0.0, 0.0]) == [7, 0, 0]
    assert sum(split_counts(1001, [0.7, 0.1, 0.2])) == 1001


def test_deeppcb_test_and_template_same_split(deeppcb_root):
    samples = read_samples(DataConfig(reader="deeppcb", root=str(deeppcb_root)))
    assert len(samples) == 2000
    out = split_samples(samples, SplitConfig())
    where = {s.id: k for k, v in out.items() for s in v}
    for s in samples:
        pair = s.group
        assert where[f"{pair}_test"] == where[f"{pair}_temp"]
    counts = Counter(where.values())
    assert counts == {"train": 1400, "val": 200, "test": 400}
