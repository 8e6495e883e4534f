"""A small CREMA-D in the release layout, around the real metadata files.

The release's media (Git LFS) cannot be had here, so the clips are built: each actor of
``VideoDemographics.csv`` is played by one real FairFace person of the same sex (and, where the
vocabularies meet, race and age group), filmed as a short 480x360 video with slight head motion;
the voice is espeak-ng speaking the clip's sentence with pitch, rate and loudness set by the
clip's emotion (and varied per actor), so that an audio model can learn something. Video and
audio have the same length. ``VideoFlash/<clip>.flv`` is FLV1 video with an MP3 track,
``AudioWAV/<clip>.wav`` 16 kHz mono PCM, as in the release. The real ``VideoDemographics.csv``,
``SentenceFilenames.csv`` and ``processedResults/summaryTable.csv`` are copied unchanged.

Bad media, as the release's own README lists some (:data:`BAD_MEDIA`): a clip whose video has
no audio track and no WAV, a corrupt (zero-duration) video, a clip whose face is never seen, a
WAV at 22.05 kHz, a WAV too short to be speech.
"""

from __future__ import annotations

import fractions
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from fairfer.datasets.cremad import EMOTION_CODES, SENTENCES, parse_clip_name

FAIRFACE_ZIP = "fairface-img-margin025-trainval.zip"
METADATA = ("VideoDemographics.csv", "SentenceFilenames.csv", "processedResults/summaryTable.csv")
#: espeak-ng pitch (0-99), words per minute and amplitude (0-200) per intended emotion.
PROSODY = {
    "anger": (45, 195, 185),
    "disgust": (30, 125, 110),
    "fear": (82, 215, 85),
    "happiness": (70, 175, 150),
    "neutral": (50, 155, 100),
    "sadness": (22, 105, 65),
}
RACE_TO_FAIRFACE = {
    "Caucasian": ["White"],
    "African American": ["Black"],
    "Asian": ["East Asian", "Southeast Asian"],
}
#: Clips whose media the fixture breaks, by what is wrong (names from the real list; the first
#: two are the release's own known-bad clips).
BAD_MEDIA = {
    "audio_too_short": "1076_MTI_SAD_XX",
    "corrupt_video": "1064_TIE_SAD_XX",
    "no_audio": "1001_TIE_ANG_XX",
    "no_face": "1002_TIE_FEA_XX",
    "resampled": "1003_TIE_HAP_XX",
}
WIDTH, HEIGHT = 480, 360
SAMPLE_RATE = 16000


def _age_bin(age: int) -> str:
    edges = [(20, "10-19"), (30, "20-29"), (40, "30-39"), (50, "40-49"), (60, "50-59")]
    edges += [(70, "60-69")]
    return next((label for edge, label in edges if age < edge), "more than 70")


def pick_people(fairface: Path, demographics: pd.DataFrame, *, seed: int) -> dict[str, bytes]:
    """One FairFace val image (JPEG bytes) per actor id, matching sex, race and age where
    FairFace has them; no person plays two actors."""
    labels = pd.read_csv(fairface / "fairface_label_val.csv")
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    people = {}
    with zipfile.ZipFile(fairface / FAIRFACE_ZIP) as archive:
        for actor, row in demographics.iterrows():
            pool = labels[(labels["gender"] == row["Sex"]) & ~labels["file"].isin(used)]
            races = RACE_TO_FAIRFACE.get(row["Race"])
            if races:
                pool = pool[pool["race"].isin(races)]
            same_age = pool[pool["age"] == _age_bin(int(row["Age"]))]
            pool = same_age if len(same_age) else pool
            file = pool["file"].iloc[int(rng.integers(len(pool)))]
            used.add(file)
            people[str(actor)] = archive.read(file)
    return people


def speak(text: str, *, emotion: str, actor: int, female: bool) -> np.ndarray:
    """espeak-ng's voice for ``text`` as float32 samples at 22.05 kHz (espeak's own rate)."""
    pitch, speed, amplitude = PROSODY[emotion]
    # Each actor speaks a little differently, as people do.
    pitch = int(np.clip(pitch + (actor % 7) - 3, 0, 99))
    speed = speed + 4 * ((actor % 5) - 2)
    voice = "en+f3" if female else "en+m3"
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude),
         "--stdout", text],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    with av.open(io.BytesIO(wav)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    samples = np.concatenate(frames)
    if samples.dtype != np.float32:
        samples = samples.astype(np.float32) / 32768.0
    return samples


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear-interpolation resampling (the fixture's; the pipeline uses FFmpeg's)."""
    n_out = int(round(len(samples) * rate_out / rate_in))
    return np.interp(
        np.arange(n_out) * rate_in / rate_out, np.arange(len(samples)), samples
    ).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def frames_of(face: Image.Image | None, n: int, *, seed: int, background: int) -> list[Image.Image]:
    """``n`` 480x360 frames: the face with slight motion, or (``None``) a face-less scene."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (background, background, background + 8))
        if face is None:
            draw = ImageDraw.Draw(canvas)
            draw.rectangle((150, 90, 330, 290), fill=(90, 120, 60))
            draw.ellipse((40, 40, 120, 120), fill=(200, 190, 40))
        else:
            dx, dy = rng.integers(-4, 5, size=2)
            canvas.paste(face, (140 + int(dx), 70 + int(dy)))
        frames.append(canvas)
    return frames


def write_flv(
    path: Path, frames: list[Image.Image], fps: int, audio: np.ndarray | None, rate: int
) -> None:
    """FLV1 video at ``fps`` with, unless ``audio`` is None, an MP3 track at ``rate``."""
    with av.open(str(path), "w", format="flv") as container:
        video = container.add_stream("flv", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 600_000
        sound = None
        if audio is not None:
            sound = container.add_stream("libmp3lame", rate=rate, layout="mono")
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            frame.time_base = fractions.Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            pcm = audio.astype(np.float32).reshape(1, -1)
            step = 1152
            for start in range(0, pcm.shape[1], step):
                chunk = np.ascontiguousarray(pcm[:, start : start + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.rate = rate
                frame.pts = start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


def build_cremad(
    shared_cremad: Path,
    fairface: Path,
    destination: Path,
    *,
    actors: list[str],
    sentences: list[str],
    fps: int = 15,
    bad_media: bool = True,
    seed: int = 0,
) -> list[str]:
    """The release layout at ``destination`` with media for every listed clip of ``actors``
    speaking ``sentences`` (plus the clips of :data:`BAD_MEDIA`); returns the clips built."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in METADATA:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_cremad / name, destination / name)
    (destination / "VideoFlash").mkdir(exist_ok=True)
    (destination / "AudioWAV").mkdir(exist_ok=True)
    demographics = pd.read_csv(shared_cremad / "VideoDemographics.csv", dtype={"ActorID": str})
    demographics = demographics.set_index("ActorID")
    names = pd.read_csv(shared_cremad / "SentenceFilenames.csv")["Filename"].tolist()
    bad = set(BAD_MEDIA.values()) if bad_media else set()
    chosen = [
        name
        for name in names
        if (name[:4] in actors and name.split("_")[1] in sentences) or name in bad
    ]
    people = pick_people(fairface, demographics.loc[sorted({c[:4] for c in chosen})], seed=seed)
    for index, clip in enumerate(chosen):
        parsed = parse_clip_name(clip)
        emotion = EMOTION_CODES[parsed["emotion_code"]]
        actor = demographics.loc[parsed["actor_id"]]
        voice = speak(
            SENTENCES[parsed["sentence"]],
            emotion=emotion,
            actor=int(parsed["actor_id"]),
            female=actor["Sex"] == "Female",
        )
        seconds = len(voice) / 22050
        face = Image.open(io.BytesIO(people[parsed["actor_id"]])).convert("RGB").resize((200, 200))
        n_frames = max(2, int(round(seconds * fps)))
        frames = frames_of(
            None if clip == BAD_MEDIA["no_face"] and bad_media else face,
            n_frames,
            seed=seed + index,
            background=40 + int(parsed["actor_id"]) % 60,
        )
        video_path = destination / "VideoFlash" / f"{clip}.flv"
        wav_path = destination / "AudioWAV" / f"{clip}.wav"
        if bad_media and clip == BAD_MEDIA["corrupt_video"]:
            # As the release's 1064_TIE_SAD_XX.flv: a file with no duration.
            video_path.write_bytes(b"FLV\x01\x05\x00\x00\x00\x09" + bytes(23))
        else:
            no_track = bad_media and clip == BAD_MEDIA["no_audio"]
            write_flv(video_path, frames, fps, None if no_track else voice, 22050)
        if bad_media and clip == BAD_MEDIA["no_audio"]:
            continue
        if bad_media and clip == BAD_MEDIA["resampled"]:
            write_wav(wav_path, voice, 22050)
        elif bad_media and clip == BAD_MEDIA["audio_too_short"]:
            write_wav(
                wav_path, resample(voice, 22050, SAMPLE_RATE)[: SAMPLE_RATE // 10], SAMPLE_RATE
            )
        else:
            write_wav(wav_path, resample(voice, 22050, SAMPLE_RATE), SAMPLE_RATE)
    return chosen


def varied_actors(shared_cremad: Path, n: int) -> list[str]:
    """``n`` actor ids alternating sex and cycling through the races, so every group of
    VideoDemographics.csv is represented in a small fixture."""
    demographics = pd.read_csv(shared_cremad / "VideoDemographics.csv", dtype={"ActorID": str})
    queues = {
        key: list(group["ActorID"])
        for key, group in demographics.sort_values("ActorID").groupby(["Sex", "Race"])
    }
    order = sorted(queues, key=lambda key: (key[1] != "Caucasian", key[1], key[0]))
    chosen: list[str] = []
    while len(chosen) < n and any(queues.values()):
        for key in order:
            if queues[key] and len(chosen) < n:
                chosen.append(queues[key].pop(0))
    return sorted(chosen)
