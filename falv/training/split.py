"""Seeded, stratified hold-out split of a dataset source (saved with the run)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from falv.data.sources import DatasetError, DatasetSource


def stratified_split(source: DatasetSource, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: about ``fraction`` of each class (by first label) held out,
    at least one video per class with two or more videos, chosen by ``seed``.

    Every class keeps at least one training video. Deterministic: the same source
    order, fraction and seed give the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction must be in (0, 1), got {fraction}", code="bad_split")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, entry in enumerate(source.entries):
        by_class[entry.labels[0] if entry.labels else ""].append(i)
    rng = np.random.default_rng([seed, 0x5B117])
    val: list[int] = []
    for name in sorted(by_class):
        members = by_class[name]
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        val.extend(int(members[j]) for j in rng.permutation(len(members))[:take])
    val_set = set(val)
    train = [i for i in range(len(source)) if i not in val_set]
    if not val:
        raise DatasetError(
            f"{source.name or source.kind}: too few videos to hold out a validation split "
            "(each class needs two); pass --val", code="bad_split"
        )
    return train, sorted(val)
