"""Which modality is fairer: models compared with each other, and the crowd as a reference.

:func:`compare_modalities` is the strategy comparison turned sideways: within each strategy and
seed, every clip model (audio, visual, fused) is compared with a reference model on the same
test clips with the same paired bootstrap (:func:`fairfer.fairness.tables.compare_runs`), so
"is fusion's sex gap smaller than the audio model's?" gets an interval.

:func:`crowd_accuracy` measures CREMA-D's raters themselves: how often the majority vote of the
voice-only, face-only and audio-visual ratings (``summaryTable.csv``) is the intended emotion,
per actor group, with intervals from a bootstrap over actors (a clip's ratings are not
independent of its actor's other clips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fairfer.datasets import cremad
from fairfer.fairness.metrics import Sensitive, attribute_label, row_groups
from fairfer.fairness.tables import compare_runs

#: summaryTable.csv column -> the modality's name in the tables.
CROWD_MODALITIES: dict[str, str] = {
    "voice_vote": "audio",
    "face_vote": "visual",
    "multimodal_vote": "audio-visual",
}
#: Cao et al. (2014), Table 3: mean share of raters recognising the intended emotion.
PUBLISHED_RATER_ACCURACY: dict[str, float] = {
    "audio": 0.409,
    "visual": 0.582,
    "audio-visual": 0.636,
}


def compare_modalities(
    predictions: pd.DataFrame,
    *,
    references: Sequence[str],
    **compare: object,
) -> dict[str, pd.DataFrame]:
    """Every clip model against each model of ``references``, within strategy and seed.

    ``predictions`` holds every run of the clip models on the same test clips; ``compare``
    goes to :func:`~fairfer.fairness.tables.compare_runs` (attributes, classes, draws, level,
    seed, ...). Returns ``by_seed`` and ``over_seeds`` as that function does, with columns
    ``strategy``, ``modality`` (the model compared), ``reference`` and the figures: ``delta``
    is modality minus reference, with its paired interval.
    """
    # compare_runs compares strategies within a model: swap the two keys.
    swapped = predictions.rename(columns={"model": "strategy", "strategy": "model"})
    results: dict[str, list[pd.DataFrame]] = {"by_seed": [], "over_seeds": []}
    for reference in references:
        if reference not in set(swapped["strategy"]):
            raise ValueError(f"reference model {reference!r} has no predictions")
        tables = compare_runs(swapped, baseline=reference, **compare)
        for name, table in tables.items():
            table = table.rename(columns={"strategy": "modality", "model": "strategy"})
            table = table[table["modality"] != reference].copy()
            table.insert(2, "reference", reference)
            results[name].append(table)
    return {name: pd.concat(parts, ignore_index=True) for name, parts in results.items()}


def crowd_accuracy(
    clips: pd.DataFrame,
    *,
    attributes: Sequence[Sensitive],
    draws: int,
    level: float,
    seed: int,
    scope: str,
    min_group_size: int = 30,
    min_actors: int = 3,
) -> pd.DataFrame:
    """The crowd's recognition of the intended emotion per modality and actor group.

    Parameters
    ----------
    clips
        One row per clip: ``actor_id``, ``intended_emotion``, the three votes
        (``voice_vote``, ``face_vote``, ``multimodal_vote``) and the attribute columns.
    attributes
        ``fairness.attributes`` (intersections as lists).
    draws, level, seed
        The actor bootstrap (``fairness.uncertainty``).
    scope
        Which clips these are (``release``: every clip rated; ``test``: this run's test split).

    Returns
    -------
    pandas.DataFrame
        Per scope, modality, attribute and group (``group`` ``all`` for every clip, ``gap``
        for the largest minus the smallest group rate among groups of at least
        ``min_group_size`` clips and ``min_actors`` actors: a group of one actor is that
        actor, and its bootstrap interval is empty): ``clips``, ``actors``, ``recognition``
        (the majority vote's credit for the intended emotion; a tie of k votes counts 1/k)
        and its interval.
    """
    rng = np.random.default_rng(seed)
    actors, actor_index = np.unique(clips["actor_id"].astype(str).to_numpy(), return_inverse=True)
    # Multiplicity of every actor in every bootstrap draw: resampling actors, not clips.
    counts = rng.multinomial(len(actors), np.full(len(actors), 1 / len(actors)), size=draws)
    weights = counts[:, actor_index].astype(float)
    low_q, high_q = (1 - level) / 2, 1 - (1 - level) / 2
    rows = []
    for column, modality in CROWD_MODALITIES.items():
        credit = np.array(
            [
                cremad.recognised(vote, intended)
                for vote, intended in zip(clips[column], clips["intended_emotion"], strict=True)
            ]
        )
        rated = ~np.isnan(credit)
        credit = np.nan_to_num(credit)

        def rate(mask: np.ndarray, credit=credit, rated=rated) -> tuple[float, np.ndarray]:
            return _rate(credit, mask & rated, weights)

        overall, overall_draws = rate(np.ones(len(clips), bool))
        rows.append(
            _row(scope, modality, "all", "all", rated, clips, overall, overall_draws, low_q, high_q)
        )
        for sensitive in attributes:
            label = attribute_label(sensitive)
            groups = row_groups(clips, sensitive)
            rates, replicate_rates = {}, {}
            for group in sorted(groups.dropna().unique()):
                mask = (groups == group).to_numpy()
                point, replicates = rate(mask)
                rows.append(
                    _row(scope, modality, label, group, rated & mask, clips, point, replicates,
                         low_q, high_q)
                )  # fmt: skip
                enough_actors = clips.loc[mask, "actor_id"].nunique() >= min_actors
                if (mask & rated).sum() >= min_group_size and enough_actors:
                    rates[group], replicate_rates[group] = point, replicates
            if len(rates) >= 2:
                matrix = np.stack(list(replicate_rates.values()), axis=1)
                gap_draws = np.nanmax(matrix, axis=1) - np.nanmin(matrix, axis=1)
                gap = max(rates.values()) - min(rates.values())
                rows.append(
                    {
                        "scope": scope,
                        "modality": modality,
                        "attribute": label,
                        "group": "gap",
                        "clips": int(rated.sum()),
                        "actors": len(actors),
                        "recognition": gap,
                        "recognition_ci_low": float(np.nanquantile(gap_draws, low_q)),
                        "recognition_ci_high": float(np.nanquantile(gap_draws, high_q)),
                        "highest": max(rates, key=rates.get),
                        "lowest": min(rates, key=rates.get),
                    }
                )
    table = pd.DataFrame(rows)
    table["published_rater_accuracy"] = table["modality"].map(PUBLISHED_RATER_ACCURACY)
    return table


def _rate(credit: np.ndarray, mask: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean credit over ``mask``, and over ``mask`` in every bootstrap draw (``weights``: each
    clip's multiplicity per draw)."""
    point = float(credit[mask].mean()) if mask.any() else float("nan")
    masked = weights * mask
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = (masked * credit).sum(1) / masked.sum(1)
    return point, replicates


def _row(scope, modality, attribute, group, mask, clips, point, replicates, low_q, high_q):
    return {
        "scope": scope,
        "modality": modality,
        "attribute": attribute,
        "group": group,
        "clips": int(mask.sum()),
        "actors": int(clips.loc[mask, "actor_id"].nunique()),
        "recognition": point,
        "recognition_ci_low": float(np.nanquantile(replicates, low_q)),
        "recognition_ci_high": float(np.nanquantile(replicates, high_q)),
        "highest": None,
        "lowest": None,
    }


def release_clips(root, *, binning: Mapping | None, value_aliases: Mapping | None) -> pd.DataFrame:
    """Every clip of the release's summaryTable.csv with its actor's demographics (as
    ingest_cremad normalises them), whether or not its media are present."""
    summary = cremad.read_summary(root)
    demographics = cremad.read_demographics(root)
    rows = []
    for name, votes in summary.iterrows():
        parsed = cremad.parse_clip_name(name)
        if parsed is None or parsed["actor_id"] not in demographics.index:
            continue
        rows.append(
            {
                "clip_id": name,
                "actor_id": parsed["actor_id"],
                "intended_emotion": cremad.EMOTION_CODES[parsed["emotion_code"]],
                "voice_vote": votes["VoiceVote"],
                "face_vote": votes["FaceVote"],
                "multimodal_vote": votes["MultiModalVote"],
                **cremad.actor_attributes(demographics.loc[parsed["actor_id"]]),
            }
        )
    frame = pd.DataFrame(rows)
    cremad.normalize_demographics(
        frame, binning=binning, value_aliases=value_aliases, source=str(root)
    )
    return frame
