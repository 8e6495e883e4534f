"""A clip's voice as a fixed-size log-mel spectrogram (torchaudio) and, optionally, its eGeMAPS
functionals (openSMILE), from a WAV file or a video's own audio track.

Decoding and resampling to the configured rate use PyAV (FFmpeg's resampler), so a WAV at
another rate than 16 kHz, or a track in the video, gives the same features as CREMA-D's
``AudioWAV`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio

from fairfer.media.video import MediaError


@dataclass(frozen=True)
class AudioSettings:
    """The ``audio`` config section."""

    sample_rate: int = 16000
    n_mels: int = 64
    window_ms: float = 25.0
    hop_ms: float = 10.0
    duration_s: float = 3.0
    min_duration_s: float = 0.3
    silence_rms: float = 1e-4
    egemaps: bool = False

    @classmethod
    def from_config(cls, config: dict) -> AudioSettings:
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})

    @property
    def samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def hop(self) -> int:
        return int(round(self.hop_ms * self.sample_rate / 1000))

    @property
    def frames(self) -> int:
        """Time steps of the spectrogram (torchaudio centres the windows)."""
        return self.samples // self.hop + 1


@dataclass(frozen=True)
class Voice:
    """A clip's mono waveform at the target rate, the rate it had, and where it came from."""

    waveform: np.ndarray
    sample_rate_in: int
    source: str


def load_voice(path: Path, *, sample_rate: int, source: str) -> Voice:
    """The first audio stream of ``path`` (a WAV or a video) as mono float32 at ``sample_rate``.

    Raises :class:`~fairfer.media.video.MediaError`: ``no_audio`` without an audio stream,
    ``corrupt_audio`` when it cannot be decoded.
    """
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no_audio", f"{path.name} has no audio track")
            stream = container.streams.audio[0]
            rate_in = stream.rate or stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError("corrupt_audio", f"{path.name}: {error}") from error
    waveform = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return Voice(waveform, int(rate_in), source)


def check_voice(voice: Voice, settings: AudioSettings) -> None:
    """Reject a voice too short or silent to mean anything (CREMA-D has both: see its README)."""
    seconds = len(voice.waveform) / settings.sample_rate
    if seconds < settings.min_duration_s:
        raise MediaError(
            "audio_too_short",
            f"{seconds:.2f} s of audio (audio.min_duration_s: {settings.min_duration_s})",
        )
    rms = float(np.sqrt(np.mean(np.square(voice.waveform, dtype=np.float64))))
    if rms < settings.silence_rms:
        raise MediaError(
            "silent_audio", f"RMS {rms:.2e} < audio.silence_rms {settings.silence_rms}"
        )


def fixed_length(waveform: np.ndarray, samples: int) -> np.ndarray:
    """The central ``samples`` of a longer waveform, or a shorter one zero-padded at the end."""
    if len(waveform) >= samples:
        start = (len(waveform) - samples) // 2
        return waveform[start : start + samples]
    return np.pad(waveform, (0, samples - len(waveform)))


@cache
def _mel(settings: AudioSettings) -> torch.nn.Module:
    window = int(round(settings.window_ms * settings.sample_rate / 1000))
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=settings.sample_rate,
        n_fft=window,
        win_length=window,
        hop_length=settings.hop,
        n_mels=settings.n_mels,
        power=2.0,
    )


def log_mel(waveform: np.ndarray, settings: AudioSettings) -> np.ndarray:
    """(n_mels, frames) log-mel power of the fixed-length waveform, in dB (floor -100 dB)."""
    signal = torch.from_numpy(fixed_length(waveform, settings.samples)).float()
    with torch.no_grad():
        power = _mel(settings)(signal)
    return (10.0 * torch.log10(power.clamp(min=1e-10))).numpy().astype(np.float32)


@cache
def _smile():
    try:
        import opensmile
    except ImportError as error:  # pragma: no cover - the pinned environment has it
        raise RuntimeError(
            "audio.egemaps is true but the opensmile package is not installed "
            "(pip install opensmile==2.6.0, as envs/requirements.txt pins)"
        ) from error
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def egemaps(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals of the whole (unpadded) waveform."""
    features = _smile().process_signal(waveform, sample_rate)
    return features.to_numpy(dtype=np.float32).reshape(-1)


EGEMAPS_DIM = 88
