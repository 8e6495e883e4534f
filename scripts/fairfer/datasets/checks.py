"""Checks of an emotion dataset's splits at ingest, before any face is aligned or model trained.

A class with no training image cannot be learnt: every training job would fail on it (or, worse,
score it as always wrong). A class or demographic group missing from valid or test leaves a
figure undefined. These checks find both from the manifest alone, so a user learns it in
seconds instead of after the embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from fairfer.errors import DatasetError

logger = logging.getLogger(__name__)

#: label_status of the rows of a class that has no training image, when such classes are dropped.
ABSENT_FROM_TRAIN = "class_absent_from_train"
POLICIES: tuple[str, ...] = ("drop", "fail")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


def check_splits(
    manifest: pd.DataFrame,
    *,
    dataset: str,
    class_absent_from_train: str = "drop",
    attributes: Sequence[str] = (),
    min_group_size: int = 30,
) -> tuple[pd.DataFrame, dict]:
    """The manifest with classes absent from train handled, and what the checks found.

    Parameters
    ----------
    manifest
        Rows with ``split``, ``emotion``, ``label_status`` and the ``attributes`` columns.
    dataset
        Names the dataset in messages.
    class_absent_from_train
        ``drop``: the rows of a class that no training image has get ``label_status``
        :data:`ABSENT_FROM_TRAIN` (kept, counted, never trained or scored) and a warning;
        ``fail``: a :class:`DatasetError` naming the classes and the fix.
    attributes
        Ground-truth attribute columns whose groups are checked across splits and against
        ``min_group_size`` in test (inferred attributes are checked after inference, in the
        fairness tables' ``small`` flag).
    min_group_size
        ``fairness.min_group_size``.

    Returns
    -------
    manifest, report
        ``report`` has ``classes`` (images per class and split), ``classes_absent_from_train``,
        ``rows_dropped``, ``classes_absent_from_valid``, ``classes_absent_from_test``,
        ``groups_absent_from_split`` and ``small_test_groups``.
    """
    if class_absent_from_train not in POLICIES:
        raise DatasetError(
            f"config key ingest.class_absent_from_train is {class_absent_from_train!r}; "
            f"allowed: {list(POLICIES)}."
        )
    labelled = manifest[(manifest["label_status"] == "ok") & manifest["emotion"].notna()]
    counts = labelled.groupby(["emotion", "split"]).size().unstack("split", fill_value=0)
    counts = counts.reindex(columns=list(SPLITS), fill_value=0)
    report: dict = {
        "classes": {
            emotion: {split: int(counts.loc[emotion, split]) for split in SPLITS}
            for emotion in counts.index
        }
    }
    absent = sorted(counts.index[counts["train"] == 0])
    report["classes_absent_from_train"] = absent
    report["rows_dropped"] = 0
    if absent:
        where = {e: {s: int(n) for s, n in counts.loc[e].items() if n} for e in absent}
        if class_absent_from_train == "fail":
            raise DatasetError(
                f"{dataset}: the classes {absent} have no training image (images per split: "
                f"{where}), so no model can learn them. Add training images of these classes, "
                "map them onto other classes with the dataset's emotion_aliases, or set config "
                "key ingest.class_absent_from_train to drop to leave their images out."
            )
        dropped = manifest["emotion"].isin(absent) & (manifest["label_status"] == "ok")
        manifest = manifest.copy()
        manifest.loc[dropped, "label_status"] = ABSENT_FROM_TRAIN
        report["rows_dropped"] = int(dropped.sum())
        logger.warning(
            "%s: classes %s have no training image (%s); their %d images are left out "
            "(label_status %s). Set ingest.class_absent_from_train: fail to stop instead.",
            dataset,
            absent,
            where,
            report["rows_dropped"],
            ABSENT_FROM_TRAIN,
        )
    kept = counts[counts["train"] > 0]
    for split in ("valid", "test"):
        missing = sorted(kept.index[kept[split] == 0])
        report[f"classes_absent_from_{split}"] = missing
        if missing:
            logger.warning(
                "%s: classes %s have no %s image; their %s figures are undefined",
                dataset,
                missing,
                split,
                "recall" if split == "test" else "validation",
            )
    report["groups_absent_from_split"] = {}
    report["small_test_groups"] = {}
    rows = labelled[~labelled["emotion"].isin(absent)]
    for attribute in attributes:
        if attribute not in rows or rows[attribute].isna().all():
            continue
        per_split = rows.groupby([attribute, "split"]).size().unstack("split", fill_value=0)
        per_split = per_split.reindex(columns=list(SPLITS), fill_value=0)
        gaps = {
            str(group): [split for split in SPLITS if per_split.loc[group, split] == 0]
            for group in per_split.index
        }
        gaps = {group: splits for group, splits in gaps.items() if splits}
        if gaps:
            report["groups_absent_from_split"][attribute] = gaps
            logger.warning(
                "%s: %s groups missing from a split (a split by subject can leave a group out): %s",
                dataset,
                attribute,
                gaps,
            )
        small = {str(g): int(n) for g, n in per_split["test"].items() if n < min_group_size}
        if small:
            report["small_test_groups"][attribute] = small
            logger.warning(
                "%s: %d %s groups have fewer than %d test images (fairness.min_group_size; "
                "flagged small in the tables): %s",
                dataset,
                len(small),
                attribute,
                min_group_size,
                small,
            )
    return manifest, report
