"""Evaluate the FairFace-trained demographic classifiers on another labelled dataset.

Another dataset labels race, gender and age in its own taxonomy, so the classifiers' FairFace
posteriors are first mapped onto it: each target class is the union of the FairFace classes
listed for it, and its probability the sum of theirs. Every FairFace class must belong to
exactly one target class, so the mapped posterior is again a distribution and accuracy,
per-class accuracy, confusion matrix and expected calibration error are computed on it as on
FairFace validation. FairFace validation is scored in the same taxonomy too, so the two are
compared like for like (fewer, merged classes make any accuracy higher).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from fairfer.datasets import utkface
from fairfer.group_labels.classifiers import expected_calibration_error
from fairfer.schemas import ATTRIBUTE_CLASSES, FAIRFACE_AGES, FAIRFACE_GENDERS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taxonomy:
    """A dataset's classes for one attribute and the FairFace classes each one merges."""

    classes: tuple[str, ...]
    from_fairface: Mapping[str, tuple[str, ...]]
    #: How the dataset's raw labels were brought into ``classes`` (for the report).
    note: str = ""

    @classmethod
    def identity(cls, classes: Sequence[str], note: str = "") -> Taxonomy:
        return cls(tuple(classes), {name: (name,) for name in classes}, note)

    def target_of(self, fairface_classes: Sequence[str]) -> np.ndarray:
        """Index of the target class of each FairFace class, checking the mapping is a partition."""
        owners: dict[str, str] = {}
        for target in self.classes:
            for source in self.from_fairface[target]:
                if source in owners:
                    raise ValueError(
                        f"FairFace class {source!r} maps to {owners[source]!r} and {target!r}"
                    )
                owners[source] = target
        unmapped = [name for name in fairface_classes if name not in owners]
        if unmapped or set(owners) - set(fairface_classes):
            raise ValueError(
                f"the mapping must cover the FairFace classes {list(fairface_classes)} exactly; "
                f"unmapped {unmapped}, unknown {sorted(set(owners) - set(fairface_classes))}"
            )
        return np.array([self.classes.index(owners[name]) for name in fairface_classes])

    def collapse(self, probabilities: np.ndarray, fairface_classes: Sequence[str]) -> np.ndarray:
        """Posteriors over ``classes`` from posteriors over ``fairface_classes`` (summed)."""
        target = self.target_of(fairface_classes)
        return np.asarray(probabilities, dtype=float) @ np.eye(len(self.classes))[target]

    def report(self) -> dict:
        return {
            "classes": list(self.classes),
            "from_fairface": {name: list(self.from_fairface[name]) for name in self.classes},
            "note": self.note,
        }


#: Each reference dataset's taxonomy per attribute.
TAXONOMIES: dict[str, dict[str, Taxonomy]] = {
    "utkface": {
        "race": Taxonomy(
            tuple(utkface.RACES.values()),
            utkface.RACE_TO_FAIRFACE,
            "UTKFace's five races; FairFace's East and Southeast Asian merge into Asian, "
            "Latino_Hispanic and Middle Eastern into Others",
        ),
        "gender": Taxonomy.identity(FAIRFACE_GENDERS, "UTKFace gender 0 male, 1 female"),
        "age": Taxonomy.identity(
            FAIRFACE_AGES,
            "UTKFace ages in years binned at FairFace's edges (0-2, 3-9, ..., 60-69, 70 and "
            "over) at ingest",
        ),
    },
}


def evaluate_in_taxonomy(
    probabilities: np.ndarray,
    labels: Sequence[str | None],
    *,
    attribute: str,
    taxonomy: Taxonomy,
    evaluated_on: str,
) -> tuple[dict, pd.DataFrame]:
    """Accuracy, per-class accuracy, confusion matrix and ECE of mapped FairFace posteriors.

    Parameters
    ----------
    probabilities
        Calibrated FairFace posteriors (n, len(ATTRIBUTE_CLASSES[attribute])).
    labels
        True labels in ``taxonomy.classes``; ``None`` rows (unlabelled) are left out.
    attribute, taxonomy, evaluated_on
        What is evaluated, how FairFace's classes map onto the labels' classes, and the name of
        the evaluation set written to the per-class table.

    Returns
    -------
    summary, per_class
        As :func:`fairfer.group_labels.classifiers.evaluate` (no FairFace-only fields), plus the
        mapping; the per-class table has ``evaluated_on`` set.
    """
    fairface_classes = ATTRIBUTE_CLASSES[attribute]
    collapsed = taxonomy.collapse(probabilities, fairface_classes)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    index = {name: i for i, name in enumerate(taxonomy.classes)}
    unknown = sorted({label for label in labels if label is not None} - set(index))
    if unknown:
        raise ValueError(f"{attribute} labels {unknown} are not in {list(taxonomy.classes)}")
    y = np.array([index[label] for label in labels if label is not None], dtype=int)
    collapsed = collapsed[labelled]
    predicted = collapsed.argmax(axis=1)
    matrix = confusion_matrix(y, predicted, labels=range(len(taxonomy.classes)))
    support = matrix.sum(axis=1)
    per_class = pd.DataFrame(
        {
            "evaluated_on": evaluated_on,
            "attribute": attribute,
            "class": taxonomy.classes,
            "count": support,
            "accuracy": np.divide(
                np.diag(matrix), support, out=np.full(len(matrix), np.nan), where=support > 0
            ),
        }
    )
    summary = {
        "n_evaluated": int(len(y)),
        "n_unlabelled": int((~labelled).sum()),
        "accuracy": float((predicted == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy": float(per_class["accuracy"].mean()),
        "expected_calibration_error": expected_calibration_error(collapsed, y)
        if len(y)
        else float("nan"),
        "confusion_matrix": matrix.tolist(),
        "taxonomy": taxonomy.report(),
    }
    return summary, per_class


def fairface_labels_in_taxonomy(
    labels: Sequence[str], taxonomy: Taxonomy, attribute: str
) -> list[str]:
    """FairFace labels renamed to the target classes they merge into."""
    fairface_classes = ATTRIBUTE_CLASSES[attribute]
    target = taxonomy.target_of(fairface_classes)
    rename = {name: taxonomy.classes[t] for name, t in zip(fairface_classes, target, strict=True)}
    return [rename[label] for label in labels]
