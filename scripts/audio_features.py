"""Featurise every clip's voice: a fixed-size log-mel spectrogram and optional eGeMAPS.

The voice is the clip's WAV (``AudioWAV/``) or, without one, the video's own audio track,
resampled to ``audio.sample_rate``. A clip with no audio, undecodable, too short or silent
audio keeps its row with the reason as ``status`` and no features, so the counts reconcile
with the clip table.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fairfer.media.audio import AudioSettings, check_voice, egemaps, load_voice, log_mel
from fairfer.media.video import MediaError
from fairfer.schemas import CLIPS, audio_features_schema, read_checked, write_parquet

logger = logging.getLogger(__name__)


def featurise(clips: pd.DataFrame, root: Path, settings: AudioSettings) -> pd.DataFrame:
    """One row per clip of ``clips`` (the clip table): status, source, features."""
    rows = []
    for clip in tqdm(clips.to_dict("records"), desc="audio features", mininterval=10):
        from_wav = clip["audio_path"] is not None
        path = Path(root) / (clip["audio_path"] if from_wav else clip["video_path"])
        row = {
            "clip_id": clip["clip_id"],
            "status": "ok",
            "detail": "",
            "source": "wav" if from_wav else "video",
            "sample_rate_in": None,
            "duration_s": None,
            "logmel": None,
            "egemaps": None,
        }
        try:
            voice = load_voice(path, sample_rate=settings.sample_rate, source=row["source"])
            row["sample_rate_in"] = voice.sample_rate_in
            row["duration_s"] = len(voice.waveform) / settings.sample_rate
            check_voice(voice, settings)
        except MediaError as error:
            row.update(status=error.reason, detail=error.detail)
            rows.append(row)
            continue
        if voice.sample_rate_in != settings.sample_rate:
            row["detail"] = f"resampled from {voice.sample_rate_in} Hz"
        row["logmel"] = log_mel(voice.waveform, settings).reshape(-1).astype(np.float16)
        if settings.egemaps:
            row["egemaps"] = egemaps(voice.waveform, settings.sample_rate)
        rows.append(row)
    return pd.DataFrame(rows)


def run(clips_path: Path, root: Path, output: Path, *, audio: dict) -> pd.DataFrame:
    settings = AudioSettings.from_config(audio)
    clips = read_checked(clips_path, CLIPS, ["clip_id", "video_path", "audio_path"]).to_pandas()
    features = featurise(clips, root, settings)
    schema = audio_features_schema(settings.n_mels, settings.frames, egemaps=settings.egemaps)
    write_parquet(features, output, schema)
    logger.info(
        "audio features of %d clips: %s; sources %s; sample rates in %s",
        len(features),
        features["status"].value_counts().to_dict(),
        features["source"].value_counts().to_dict(),
        features["sample_rate_in"].value_counts().to_dict(),
    )
    return features


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        Path(snakemake.input.clips),
        Path(snakemake.params.root),
        Path(snakemake.output.features),
        audio=snakemake.params.audio,
    )
