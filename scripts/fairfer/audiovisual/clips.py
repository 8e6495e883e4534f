"""A clip's model inputs from its frames' embeddings and its voice's features.

The visual input is the mean FaceNet embedding over the clip's frames in which a face was
detected and aligned (``alignment_status`` ``ok``; a whole-frame fallback is not a face), so a
clip whose face is never found has none. A clip is usable when both modalities are, so that
every modality's model (and their fusion) is scored on the same clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.training.data import read_embedding_table


def frame_embeddings(paths: Sequence[str | Path]) -> pd.DataFrame:
    """``image_id, alignment_status, embedding`` of the frames' embedding shards."""
    return read_embedding_table(paths, ["alignment_status"])


def pool_visual(
    clips: pd.DataFrame, embeddings: pd.DataFrame
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per clip (index ``clip_id``): the mean embedding of its face frames (None without
    any), the number of face frames, and the number of frames sampled."""
    by_frame = embeddings.set_index("image_id")
    pooled, faces, sampled = {}, {}, {}
    for clip in clips.itertuples(index=False):
        ids = [i for i in clip.frame_ids if i in by_frame.index]
        rows = by_frame.loc[ids] if ids else by_frame.iloc[:0]
        ok = rows[rows["alignment_status"] == "ok"]
        faces[clip.clip_id] = len(ok)
        sampled[clip.clip_id] = len(clip.frame_ids)
        pooled[clip.clip_id] = (
            np.mean(np.stack(ok["embedding"].to_numpy()), axis=0).astype(np.float32)
            if len(ok)
            else None
        )
    return pd.Series(pooled), pd.Series(faces), pd.Series(sampled)


def clip_status(faces: int, audio_status: str, audio_detail: str) -> tuple[str, str]:
    """The first reason a clip cannot be used (visual, then audio), and every reason found."""
    problems = []
    if faces == 0:
        problems.append(("no_face", "no face found in any sampled frame"))
    if audio_status != "ok":
        problems.append((audio_status, audio_detail))
    if not problems:
        return "ok", audio_detail
    return problems[0][0], "; ".join(f"{reason}: {detail}" for reason, detail in problems)


def assemble(
    clips: pd.DataFrame, manifest: pd.DataFrame, embeddings: pd.DataFrame, audio: pd.DataFrame
) -> pd.DataFrame:
    """One row per clip of the manifest: status, frame counts and both modalities' inputs."""
    pooled, faces, sampled = pool_visual(clips, embeddings)
    audio = audio.set_index("clip_id")
    rows = []
    for clip in manifest.itertuples(index=False):
        voice = audio.loc[clip.image_id]
        status, detail = clip_status(int(faces[clip.image_id]), voice["status"], voice["detail"])
        row = {
            "image_id": clip.image_id,
            "split": clip.split,
            "status": status,
            "detail": detail,
            "frames": int(sampled[clip.image_id]),
            "faces": int(faces[clip.image_id]),
            "visual": pooled[clip.image_id] if status == "ok" else None,
            "logmel": voice["logmel"] if status == "ok" else None,
        }
        if "egemaps" in audio.columns:
            row["egemaps"] = voice["egemaps"] if status == "ok" else None
        rows.append(row)
    return pd.DataFrame(rows)


def reconciliation(
    listed: int, ingest_report: dict, inputs: pd.DataFrame, frames: pd.DataFrame
) -> dict:
    """Counts that add up: clips listed = ingest rejects + clips by status; frames sampled =
    face frames + frames without a face."""
    by_status = inputs["status"].value_counts().sort_index().to_dict()
    frame_status = frames["alignment_status"].value_counts().sort_index().to_dict()
    return {
        "clips_listed": listed,
        "clips_rejected_at_ingest": ingest_report.get("rejected", {}),
        "clips_not_sampled": ingest_report.get("clips_not_sampled", 0),
        "clips_decoded": len(inputs),
        "clips_by_status": by_status,
        "clips_usable": int(by_status.get("ok", 0)),
        "frames_sampled": int(inputs["frames"].sum()),
        "frames_with_face": int(inputs["faces"].sum()),
        "frames_by_alignment_status": frame_status,
        "frames_embedded": len(frames),
    }
