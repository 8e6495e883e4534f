"""CREMA-D (Cao et al. 2014) in its release layout: clips, labels, actors' demographics.

The release holds ``SentenceFilenames.csv`` (the 7,442 clip names,
``<ActorID>_<Sentence>_<Emotion>_<Level>``), ``VideoDemographics.csv`` (one row per actor:
``ActorID, Age, Sex, Race, Ethnicity``), ``processedResults/summaryTable.csv`` (the crowd's
majority vote per clip for the voice alone, the face alone and both) and the media beside
them: ``VideoFlash/<clip>.flv`` (video with audio) and ``AudioWAV/<clip>.wav`` (16 kHz mono).

:func:`clip_table` turns the metadata and the media present into one row per clip: the label
(the intended emotion of the file name, or the crowd's perceived emotion for one modality),
the actor's demographics as ground truth, and a split drawn per actor. Decoding the media is
:mod:`fairfer.media`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.datasets.attributes import normalize_attribute
from fairfer.datasets.splits import assign_splits, sample_splits
from fairfer.errors import DatasetError, MissingDataError

DATASET = "cremad"
#: Emotion codes of the file names, in FER+'s names (so cross-dataset evaluation matches).
EMOTION_CODES: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
#: Letters of summaryTable.csv's votes.
VOTE_CODES: dict[str, str] = {
    "A": "anger",
    "D": "disgust",
    "F": "fear",
    "H": "happiness",
    "N": "neutral",
    "S": "sadness",
}
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
LEVELS: tuple[str, ...] = ("LO", "MD", "HI", "XX")
#: label setting -> summaryTable.csv column of that modality's majority vote.
CROWD_COLUMNS: dict[str, str] = {
    "voice": "VoiceVote",
    "face": "FaceVote",
    "multimodal": "MultiModalVote",
}
LABELS: tuple[str, ...] = ("intended", *CROWD_COLUMNS)
CLIP_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
DEMOGRAPHICS = "VideoDemographics.csv"
SENTENCE_FILENAMES = "SentenceFilenames.csv"
SUMMARY_TABLE = "processedResults/summaryTable.csv"
VIDEO = "VideoFlash/{clip}.flv"
AUDIO = "AudioWAV/{clip}.wav"
#: Race values of VideoDemographics.csv that name no group.
UNKNOWN_RACE = "Unknown"


def parse_clip_name(name: str) -> dict[str, str] | None:
    """Actor, sentence, emotion and level of a clip name, or None if it is not one."""
    match = CLIP_NAME.match(name)
    if (
        match is None
        or match[2] not in SENTENCES
        or match[3] not in EMOTION_CODES
        or match[4] not in LEVELS
    ):
        return None
    return {"actor_id": match[1], "sentence": match[2], "emotion_code": match[3], "level": match[4]}


def read_demographics(root: Path) -> pd.DataFrame:
    """``VideoDemographics.csv`` keyed by the 4-digit actor id (a string)."""
    path = Path(root) / DEMOGRAPHICS
    if not path.is_file():
        raise MissingDataError(
            f"CREMA-D at {root} has no {DEMOGRAPHICS} (one row per actor: ActorID, Age, Sex, "
            "Race, Ethnicity); place the release's metadata files beside VideoFlash/ and "
            "AudioWAV/ (datasets.cremad.path)"
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"ActorID", "Age", "Sex", "Race", "Ethnicity"} - set(frame.columns)
    if missing:
        raise DatasetError(
            f"{path} lacks columns {sorted(missing)}; found {list(frame.columns)}. It must be "
            "the release's file (ActorID, Age, Sex, Race, Ethnicity)."
        )
    frame["ActorID"] = frame["ActorID"].str.strip().str.zfill(4)
    return frame.set_index("ActorID")


def read_clip_names(root: Path) -> list[str]:
    """Clip names of ``SentenceFilenames.csv``, in the release's order."""
    path = Path(root) / SENTENCE_FILENAMES
    if not path.is_file():
        raise MissingDataError(
            f"CREMA-D at {root} has no {SENTENCE_FILENAMES} (the list of clips); place the "
            "release's metadata files beside VideoFlash/ and AudioWAV/ (datasets.cremad.path)"
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "Filename" not in frame.columns:
        raise DatasetError(
            f"{path} has no Filename column (found {list(frame.columns)}); it must be the "
            "release's file (Stimulus_Number, Filename)."
        )
    return frame["Filename"].str.strip().tolist()


def read_summary(root: Path) -> pd.DataFrame:
    """``summaryTable.csv``'s three majority votes per clip (``A`` or, on ties, ``A:H``)."""
    path = Path(root) / SUMMARY_TABLE
    if not path.is_file():
        raise MissingDataError(
            f"CREMA-D at {root} has no {SUMMARY_TABLE} (the crowd's votes per clip); it is "
            "needed for datasets.cremad.label face, voice or multimodal and for the crowd's "
            "accuracy (rule crowd_accuracy). Place the release's processedResults/ folder "
            "there."
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = ["FileName", *CROWD_COLUMNS.values()]
    missing = set(columns) - set(frame.columns)
    if missing:
        raise DatasetError(f"{path} lacks columns {sorted(missing)}; found {list(frame.columns)}")
    return frame[columns].set_index("FileName")


def crowd_emotion(vote: str) -> tuple[str | None, str]:
    """The emotion of one majority vote and its label status (``crowd_tie`` for ``A:H``)."""
    vote = (vote or "").strip()
    if not vote:
        return None, "no_crowd_rating"
    letters = vote.split(":")
    if len(letters) > 1:
        return None, "crowd_tie"
    emotion = VOTE_CODES.get(letters[0])
    return (emotion, "ok") if emotion else (None, "unknown_crowd_vote")


def recognised(vote: str, intended: str) -> float:
    """Credit of one majority vote for recognising ``intended``: 1 if it is the vote, 1/k if it
    is one of k tied votes, else 0 (NaN when there was no vote)."""
    letters = [VOTE_CODES.get(v) for v in (vote or "").strip().split(":") if v]
    if not letters:
        return float("nan")
    return letters.count(intended) / len(letters)


def actor_attributes(actor: pd.Series) -> dict[str, str | None]:
    """An actor's race, gender (sex), age in years and ethnicity as released; race
    ``Unknown`` names no group and is null."""
    return {
        "race": None if actor["Race"] == UNKNOWN_RACE else actor["Race"] or None,
        "gender": actor["Sex"] or None,
        "age": actor["Age"] or None,
        "ethnicity": actor["Ethnicity"] or None,
    }


def normalize_demographics(
    frame: pd.DataFrame,
    *,
    binning: Mapping[str, Sequence[float]] | None,
    value_aliases: Mapping[str, Mapping[str, str]] | None,
    source: str,
) -> dict:
    """Bin age and map vocabularies in place (``fairness.binning`` / ``value_aliases``), as for
    every dataset's own attributes; returns what was done per attribute."""
    report = {}
    for attribute in ("race", "gender", "age", "ethnicity"):
        frame[attribute], report[attribute] = normalize_attribute(
            frame[attribute].astype(object).where(frame[attribute].notna(), None),
            attribute=attribute,
            edges=(binning or {}).get(attribute),
            aliases=(value_aliases or {}).get(attribute),
            source=source,
        )
    return report


def _reject(clip: str, path: str, reason: str, detail: str) -> dict:
    return {
        "image_id": clip,
        "dataset": DATASET,
        "split": "unassigned",
        "source_path": path,
        "reason": reason,
        "detail": detail,
    }


def clip_table(
    root: Path,
    *,
    label: str = "intended",
    fractions: Mapping[str, float],
    seed: int,
    sample_per_split: Mapping[str, int] | None = None,
    binning: Mapping[str, Sequence[float]] | None = None,
    value_aliases: Mapping[str, Mapping[str, str]] | None = None,
    extra_attributes: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One row per listed clip whose video is present, the rejected clips, and a report.

    Parameters
    ----------
    root
        The release folder (metadata files, ``VideoFlash/``, ``AudioWAV/``).
    label
        ``intended`` (the file name's emotion) or the crowd's majority vote for ``voice``,
        ``face`` or ``multimodal`` presentation; a clip whose vote is tied keeps its row with
        ``label_status`` ``crowd_tie`` and no emotion.
    fractions, seed
        Shares of actors per split and the seed of the draw: no actor is in two splits.
    sample_per_split
        A seeded subset of clips per split (``{train: 500, valid: 100}``), after the split.
    binning, value_aliases
        ``fairness.binning`` and ``fairness.value_aliases``: age in years is binned (FairFace's
        bins by default), race, sex and ethnicity values may be renamed.
    extra_attributes
        Attributes the run analyses beyond race, gender and age: only ``ethnicity`` exists.

    Returns
    -------
    clips, rejects, report
        ``clips``: ``clip_id, actor_id, sentence, intended_emotion, level, emotion,
        label_status, split, video_path, audio_path`` (relative to ``root``; the WAV path is
        null when absent, and the video's own track is used), the three crowd votes, and
        ``race, gender, age`` (+ ``ethnicity``). ``rejects``: the ingest rejects' columns
        (``bad_clip_name``, ``unknown_actor``, ``missing_file``, ``duplicate_image_id``).
    """
    if label not in LABELS:
        raise DatasetError(
            f"config key datasets.cremad.label is {label!r}; allowed: {', '.join(LABELS)}."
        )
    unknown = sorted(set(extra_attributes) - {"ethnicity"})
    if unknown:
        raise DatasetError(
            f"config key fairness.attributes names {unknown}, which CREMA-D does not have; its "
            "attributes are race, gender (the actor's sex), age and ethnicity."
        )
    root = Path(root)
    demographics = read_demographics(root)
    names = read_clip_names(root)
    summary = (
        read_summary(root) if label != "intended" or (root / SUMMARY_TABLE).is_file() else None
    )
    rows, rejects, seen = [], [], set()
    for name in names:
        video = VIDEO.format(clip=name)
        parsed = parse_clip_name(name)
        if name in seen:
            rejects.append(_reject(name, video, "duplicate_image_id", "listed twice"))
            continue
        seen.add(name)
        if parsed is None:
            rejects.append(
                _reject(name, video, "bad_clip_name", "not <ActorID>_<Sentence>_<Emotion>_<Level>")
            )
            continue
        if parsed["actor_id"] not in demographics.index:
            rejects.append(
                _reject(
                    name,
                    video,
                    "unknown_actor",
                    f"actor {parsed['actor_id']} not in {DEMOGRAPHICS}",
                )
            )
            continue
        if not (root / video).is_file():
            rejects.append(_reject(name, video, "missing_file", f"{video} not found"))
            continue
        audio = AUDIO.format(clip=name)
        intended = EMOTION_CODES[parsed["emotion_code"]]
        votes = summary.loc[name].to_dict() if summary is not None and name in summary.index else {}
        if label == "intended":
            emotion, status = intended, "ok"
        else:
            emotion, status = crowd_emotion(votes.get(CROWD_COLUMNS[label], ""))
        actor = demographics.loc[parsed["actor_id"]]
        rows.append(
            {
                "clip_id": name,
                "actor_id": parsed["actor_id"],
                "sentence": parsed["sentence"],
                "intended_emotion": intended,
                "level": parsed["level"],
                "emotion": emotion,
                "label_status": status,
                "video_path": video,
                "audio_path": audio if (root / audio).is_file() else None,
                "voice_vote": votes.get("VoiceVote") or None,
                "face_vote": votes.get("FaceVote") or None,
                "multimodal_vote": votes.get("MultiModalVote") or None,
                **actor_attributes(actor),
            }
        )
    columns = [
        "clip_id", "actor_id", "sentence", "intended_emotion", "level", "emotion",
        "label_status", "video_path", "audio_path", "voice_vote", "face_vote",
        "multimodal_vote", "race", "gender", "age", "ethnicity",
    ]  # fmt: skip
    clips = pd.DataFrame(rows, columns=columns)
    report: dict = {"clips_listed": len(names), "label": label}
    report["attributes"] = normalize_demographics(
        clips, binning=binning, value_aliases=value_aliases, source=str(root / DEMOGRAPHICS)
    )
    clips["split"] = (
        assign_splits(clips["actor_id"].tolist(), fractions=fractions, seed=seed)
        if len(clips)
        else np.array([], dtype=object)
    )
    before = len(clips)
    clips = sample_splits(clips, sample_per_split, seed=seed).reset_index(drop=True)
    report["clips_not_sampled"] = before - len(clips)
    report["actors_by_split"] = {
        split: int(group["actor_id"].nunique()) for split, group in clips.groupby("split")
    }
    report["wav_missing_video_track_used"] = int(clips["audio_path"].isna().sum())
    if not len(clips):
        example = VIDEO.format(clip=names[0]) if names else "-"
        raise DatasetError(
            f"CREMA-D at {root}: none of the {len(names)} clips of {SENTENCE_FILENAMES} has its "
            f"video in {root / 'VideoFlash'} (e.g. {example}); "
            "check datasets.cremad.path, or fetch the media (git lfs pull in the release "
            "repository)"
        )
    rejected = pd.DataFrame(
        rejects, columns=["image_id", "dataset", "split", "source_path", "reason", "detail"]
    )
    return clips, rejected, report
