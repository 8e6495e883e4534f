"""Frames of a video clip, evenly spaced over its length, decoded with PyAV.

PyAV's wheels bundle FFmpeg with the Flash Video (FLV1 / Sorenson Spark) decoder CREMA-D's
``VideoFlash/*.flv`` use, and H.264, MPEG-4 and the other common codecs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image


class MediaError(ValueError):
    """A clip that cannot be used; ``reason`` is its reject reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SampledFrames:
    """The frames kept, their times in seconds, and how many the video had."""

    images: list[Image.Image]
    times: list[float]
    decoded: int


def frame_positions(n_decoded: int, n_frames: int) -> list[int]:
    """Indices of ``n_frames`` frames evenly spaced over ``n_decoded`` (the centres of equal
    segments, so the first and last, often before and after the expression, are avoided)."""
    if n_decoded <= 0:
        return []
    count = min(n_frames, n_decoded)
    return sorted({int((k + 0.5) * n_decoded / count) for k in range(count)})


def sample_frames(path: Path, n_frames: int) -> SampledFrames:
    """``n_frames`` RGB frames of the video at ``path``, evenly spaced (fewer if it is shorter).

    Every frame is decoded (FLV1 has no reliable seeking) but only the chosen ones are converted
    to images. Raises :class:`MediaError` (``corrupt_video``) when the file cannot be opened or
    decoded or has no video frames.
    """
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("corrupt_video", f"{path.name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        if not frames:
            raise MediaError("corrupt_video", f"{path.name}: {error}") from error
        # A damaged tail: the frames before it are kept.
    if not frames:
        raise MediaError("corrupt_video", f"{path.name} has no decodable video frames")
    chosen = frame_positions(len(frames), n_frames)
    images = [frames[i].to_image().convert("RGB") for i in chosen]
    times = [float(frames[i].time) if frames[i].time is not None else float("nan") for i in chosen]
    return SampledFrames(images, times, len(frames))


def encode_frame(image: Image.Image, *, quality: int) -> bytes:
    """A frame as JPEG bytes (PNG would make a corpus' frames several times larger)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
