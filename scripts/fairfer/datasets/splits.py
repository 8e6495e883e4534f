"""Train / valid / test splits for datasets without an official one, shared by every adapter.

:func:`assign_splits` draws splits per key (a subject keeps all its images in one split),
:func:`sample_splits` keeps a seeded subset per split for quick runs, and
:func:`split_validation` carves a stratified validation split out of train.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from fairfer.errors import DatasetError

SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Other spellings of the split names accepted in a ``split`` column.
SPLIT_ALIASES: dict[str, str] = {
    "training": "train",
    "val": "valid",
    "validation": "valid",
    "testing": "test",
    "publictest": "valid",
    "privatetest": "test",
}
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "valid": 0.1, "test": 0.1}


def assign_splits(
    keys: Sequence[Hashable], *, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Seeded split of every item, drawn per distinct key so that equal keys share a split.

    Parameters
    ----------
    keys
        One key per item (an image id, or a subject id to keep a subject's images together).
    fractions
        Share of the distinct keys per split name (``train``, ``valid``, ``test``); the shares
        must sum to 1. The shares of images follow only approximately when groups differ in size.
    seed
        Seed of the permutation; the same keys and seed always give the same splits.

    Returns
    -------
    numpy.ndarray
        The split name of each item, in the order of ``keys``.
    """
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise DatasetError(f"split fractions name unknown splits {unknown}; use {list(SPLITS)}")
    shares = np.array([fractions.get(split, 0.0) for split in SPLITS], dtype=float)
    if (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise DatasetError(f"split fractions {dict(fractions)} must be non-negative and sum to 1")
    # Sorting first makes the result independent of the input order.
    distinct = sorted({str(key) for key in keys})
    order = np.random.default_rng(seed).permutation(len(distinct))
    bounds = np.round(np.cumsum(shares) * len(distinct)).astype(int)
    position = np.empty(len(distinct), dtype=int)
    position[order] = np.arange(len(distinct))
    split_of = {
        key: SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
        for key, rank in zip(distinct, position, strict=True)
    }
    return np.array([split_of[str(key)] for key in keys], dtype=object)


def sample_splits(
    manifest: pd.DataFrame, sample_per_split: Mapping[str, int] | None, *, seed: int
) -> pd.DataFrame:
    """Keep a seeded random subset of the splits named in ``sample_per_split`` (quick runs)."""
    if not sample_per_split:
        return manifest
    return pd.concat(
        [
            group.sample(n=min(len(group), sample_per_split[split]), random_state=seed)
            if split in sample_per_split
            else group
            for split, group in manifest.groupby("split", sort=False)
        ],
        ignore_index=True,
    )


def split_validation(manifest: pd.DataFrame, *, fraction: float, seed: int) -> pd.DataFrame:
    """Move a seeded, emotion-stratified share of the ``train`` rows to a ``valid`` split.

    Parameters
    ----------
    manifest
        A manifest with ``image_id``, ``split`` and ``emotion`` columns and no ``valid`` rows.
    fraction
        Share of each emotion's training images moved (rounded half up per emotion).
    seed
        Seed of the draw; the same manifest and seed give the same split in any row order.

    Returns
    -------
    pandas.DataFrame
        A copy of ``manifest`` with those rows' ``split`` set to ``"valid"``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    if (manifest["split"] == "valid").any():
        raise ValueError("the manifest already has a 'valid' split; carve validation only once")
    result = manifest.copy()
    train = result[result["split"] == "train"].sort_values("image_id")
    rng = np.random.default_rng(seed)
    # Images without an emotion form one stratum of their own.
    for _, group in train.groupby(train["emotion"].fillna(""), sort=True):
        count = int(np.floor(fraction * len(group) + 0.5))
        chosen = rng.choice(group.index.to_numpy(), size=count, replace=False)
        result.loc[chosen, "split"] = "valid"
    return result
