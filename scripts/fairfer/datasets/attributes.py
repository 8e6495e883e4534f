"""Sensitive attributes a dataset provides: which columns, their vocabulary, numeric binning.

Race, gender and age have FairFace's vocabulary (:data:`fairfer.schemas.ATTRIBUTE_CLASSES`):
given values are matched to it case-insensitively and through common synonyms (``FEMALE``,
``f`` and ``woman`` are ``Female``), so that given and inferred labels share one vocabulary.
Any other attribute (country, skin tone, ethnicity, ...) is a column the dataset provides,
taken as given after the configured value aliases. Numeric columns with configured bin edges
(age, by default at FairFace's bins) are binned, so that ages in years compare with inferred
age groups.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fairfer.schemas import ATTRIBUTE_CLASSES

logger = logging.getLogger(__name__)

#: Attributes that are inferred from FairFace-trained classifiers where a dataset lacks them.
INFERABLE: tuple[str, ...] = tuple(ATTRIBUTE_CLASSES)
#: Lower edges of FairFace's age groups: with these edges ages in years get FairFace's names.
FAIRFACE_AGE_EDGES: tuple[float, ...] = (0, 3, 10, 20, 30, 40, 50, 60, 70)
#: Synonyms of FairFace's values, after lower-casing and folding ``_``/``-`` to spaces.
BUILTIN_VALUE_ALIASES: dict[str, dict[str, str]] = {
    "gender": {
        "f": "Female",
        "woman": "Female",
        "women": "Female",
        "girl": "Female",
        "m": "Male",
        "man": "Male",
        "men": "Male",
        "boy": "Male",
    },
    "race": {
        "latino": "Latino_Hispanic",
        "hispanic": "Latino_Hispanic",
        "latino hispanic": "Latino_Hispanic",
        "asian east": "East Asian",
        "asian southeast": "Southeast Asian",
        "south east asian": "Southeast Asian",
        "african american": "Black",
        "caucasian": "White",
        "middle east": "Middle Eastern",
    },
    "age": {"70+": "more than 70", "over 70": "more than 70"},
}


def _fold(value: str) -> str:
    return re.sub(r"[\s_\-]+", " ", value.strip().lower())


def bin_labels(edges: Sequence[float], *, attribute: str) -> list[str]:
    """Names of the bins that ``edges`` (ascending lower edges) define.

    Age with FairFace's edges gets FairFace's names (``0-2`` ... ``more than 70``); otherwise
    integer edges give ``lo-hi`` (inclusive) and the last bin ``>=last``.
    """
    if attribute == "age" and tuple(edges) == FAIRFACE_AGE_EDGES:
        return list(ATTRIBUTE_CLASSES["age"])
    integer = all(float(edge).is_integer() for edge in edges)
    shown = [str(int(edge)) if integer else f"{edge:g}" for edge in edges]
    labels = []
    for index, low in enumerate(shown[:-1]):
        high = edges[index + 1]
        labels.append(f"{low}-{int(high) - 1}" if integer else f"{low}-{high:g}")
    labels.append(f">={shown[-1]}")
    return labels


def _numeric(values: pd.Series) -> pd.Series | None:
    """``values`` as numbers when every non-empty value is one, else None."""
    present = values.dropna()
    if present.empty:
        return None
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    if numbers.isna().any():
        return None
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce")


def normalize_attribute(
    values: pd.Series,
    *,
    attribute: str,
    edges: Sequence[float] | None = None,
    aliases: Mapping[str, str] | None = None,
    source: str = "the dataset",
) -> tuple[pd.Series, dict]:
    """One attribute's values in the run's vocabulary, and what was done to them.

    Parameters
    ----------
    values
        The column as read (strings, empty cells as null).
    attribute
        Its name: race, gender and age are matched to FairFace's vocabulary.
    edges
        Ascending lower bin edges for numeric values (``fairness.binning.<attribute>``).
        Values below the first edge are unknown (counted in ``below_first_edge``).
    aliases
        The user's value aliases (``fairness.value_aliases.<attribute>``), applied first and
        matched case-insensitively.
    source
        Names the file in warnings.

    Returns
    -------
    values, report
        The normalised column (null where unknown) and ``{"binned": bool, "mapped": n,
        "outside_vocabulary": [...], ...}``.
    """
    report: dict = {"binned": False}
    numbers = _numeric(values)
    if numbers is not None and edges:
        edges = sorted(float(edge) for edge in edges)
        labels = bin_labels(edges, attribute=attribute)
        position = np.searchsorted(np.asarray(edges), numbers.to_numpy(float), side="right") - 1
        binned = [
            None if np.isnan(number) or where < 0 else labels[where]
            for number, where in zip(numbers.to_numpy(float), position, strict=True)
        ]
        report.update(
            binned=True,
            edges=edges,
            below_first_edge=int(((position < 0) & ~np.isnan(numbers.to_numpy(float))).sum()),
        )
        return pd.Series(binned, index=values.index, dtype=object), report
    if numbers is not None and numbers.nunique() > 12:
        logger.warning(
            "%s: attribute %r is numeric with %d distinct values, each its own group; set "
            "fairness.binning.%s to bin edges (e.g. [0, 20, 40, 60])",
            source,
            attribute,
            numbers.nunique(),
            attribute,
        )
        report["unbinned_numeric_values"] = int(numbers.nunique())
    user = {_fold(str(key)): str(target) for key, target in (aliases or {}).items()}
    canonical = {_fold(name): name for name in ATTRIBUTE_CLASSES.get(attribute, ())}
    builtin = {key: target for key, target in BUILTIN_VALUE_ALIASES.get(attribute, {}).items()}
    mapped, outside = 0, set()
    result = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
            result.append(None)
            continue
        text = str(value).strip()
        key = _fold(text)
        target = user.get(key)
        if target is None:
            target = canonical.get(key) or builtin.get(key)
        if target is None:
            target = text
            if canonical:
                outside.add(text)
        mapped += target != text
        result.append(target)
    report["mapped"] = mapped
    if outside:
        report["outside_vocabulary"] = sorted(outside)[:20]
        logger.warning(
            "%s: %s values %s are not in FairFace's vocabulary %s; they stay as given, so they "
            "are not comparable with inferred labels. Map them with fairness.value_aliases.%s",
            source,
            attribute,
            sorted(outside)[:5],
            list(ATTRIBUTE_CLASSES[attribute]),
            attribute,
        )
    return pd.Series(result, index=values.index, dtype=object), report
