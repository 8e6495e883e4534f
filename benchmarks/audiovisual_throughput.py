"""Print the audio-visual branch's throughput on this CPU and the full CREMA-D's estimated cost.

Builds ``--clips`` clips in CREMA-D's release layout (tests/cremad_layout.py: 480x360 FLV1
video at ``--fps`` with an MP3 track, 16 kHz WAV; real FairFace faces, espeak-ng speech), then
times, each on the rule's own code path:

- video decoding and frame sampling (ingest_cremad): video frames decoded per second, clips/s;
- face detection and alignment of the sampled frames (align_faces): frames/s;
- FaceNet embedding of the aligned frames (embed_faces, with ``--weights`` a converted
  state dict such as resources/facenet/sandberg-keras-*.pt): frames/s;
- voice featurisation (audio_features): log-mel clips/s, and with eGeMAPS;

and extrapolates to the release's 7,442 clips (mean 2.5 s each; ``--frames-per-clip``
frames each, plus the clip's own image, aligned and embedded) on one core.

    .venv/bin/python benchmarks/audiovisual_throughput.py --clips 60 --threads 1 \
        --weights resources/facenet/sandberg-keras-<digest>.pt
"""

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from fairfer.faces.alignment import FaceAligner
from fairfer.media.audio import AudioSettings, egemaps, load_voice, log_mel
from fairfer.media.video import encode_frame, sample_frames
from fairfer.rule_inputs import rule_script
from fairfer.schemas import ALIGNED, write_parquet

ROOT = Path(__file__).resolve().parents[1]
# The tests' fixture builder, loaded from its path (tests/ is no package).
_spec = importlib.util.spec_from_file_location("cremad_layout", ROOT / "tests/cremad_layout.py")
cremad_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cremad_layout)
align_rows = rule_script("align_faces").align_rows
embed_shard = rule_script("embed_faces").embed_shard
RELEASE_CLIPS = 7442
RELEASE_MEAN_SECONDS = 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--fps", type=int, default=30, help="CREMA-D's videos: 30 fps")
    parser.add_argument("--frames-per-clip", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = "AMX" if "amx_bf16" in Path("/proc/cpuinfo").read_text() else "no AMX"
    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    figures: dict = {
        "cpu": f"{cpu}, avx512_bf16 {'yes' if bf16 else 'no'}",
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "CREMA-D"
        shared = args.data / "crema-d"
        actors = cremad_layout.varied_actors(shared, max(1, args.clips // 12 + 1))
        built = cremad_layout.build_cremad(
            shared, args.data / "fairface", root, actors=actors, sentences=["TIE", "IOM"],
            fps=args.fps, bad_media=False,
        )[: args.clips]  # fmt: skip
        seconds = []
        start = time.perf_counter()
        decoded, sampled = 0, []
        for clip in built:
            frames = sample_frames(root / "VideoFlash" / f"{clip}.flv", args.frames_per_clip)
            decoded += frames.decoded
            seconds.append(frames.decoded / args.fps)
            sampled += [encode_frame(image, quality=92) for image in frames.images]
        elapsed = time.perf_counter() - start
        figures["video"] = {
            "clips": len(built),
            "mean_clip_seconds": round(sum(seconds) / len(seconds), 2),
            "video_frames_decoded_per_s": round(decoded / elapsed, 1),
            "clips_decoded_per_s": round(len(built) / elapsed, 2),
        }
        rows = pa.table(
            {
                "image_id": [str(i) for i in range(len(sampled))],
                "dataset": ["cremad_frames"] * len(sampled),
                "split": ["train"] * len(sampled),
                "image": sampled,
            }
        )
        aligner = FaceAligner(pad_fraction=0.0, upscale_min_side=0)
        start = time.perf_counter()
        records = align_rows(rows, aligner)
        elapsed = time.perf_counter() - start
        found = sum(r["status"] == "ok" for r in records)
        figures["alignment"] = {
            "frames": len(sampled),
            "faces_found": found,
            "frames_aligned_per_s": round(len(sampled) / elapsed, 2),
        }
        if args.weights is not None:
            aligned = write_parquet(
                pd.DataFrame(records), Path(scratch) / "aligned.parquet", ALIGNED
            )
            start = time.perf_counter()
            embed_shard(
                aligned, Path(scratch) / "embedded.parquet", weights="sandberg-keras",
                weights_path=args.weights, batch_size=32, workers=0, seed=0, device="cpu",
                precision="auto",
            )  # fmt: skip
            elapsed = time.perf_counter() - start
            figures["embedding"] = {"frames_embedded_per_s": round(len(records) / elapsed, 2)}
        settings = AudioSettings()
        for name, with_egemaps in (("logmel", False), ("logmel+egemaps", True)):
            start = time.perf_counter()
            for clip in built:
                voice = load_voice(
                    root / "AudioWAV" / f"{clip}.wav", sample_rate=16000, source="wav"
                )
                log_mel(voice.waveform, settings)
                if with_egemaps:
                    egemaps(voice.waveform, 16000)
            elapsed = time.perf_counter() - start
            figures[f"audio_{name}_clips_per_s"] = round(len(built) / elapsed, 2)
    # The release: every clip decoded once, frames_per_clip frames and the clip's image
    # (its middle frame) aligned and embedded, every voice featurised; one core per job.
    scale = RELEASE_MEAN_SECONDS / figures["video"]["mean_clip_seconds"]
    per_clip = {
        "decode": scale / figures["video"]["clips_decoded_per_s"],
        "align": (args.frames_per_clip + 1) / figures["alignment"]["frames_aligned_per_s"],
        "audio": 1 / figures["audio_logmel_clips_per_s"],
    }
    if "embedding" in figures:
        per_clip["embed"] = (args.frames_per_clip + 1) / figures["embedding"][
            "frames_embedded_per_s"
        ]
    figures["release_estimate_core_minutes"] = {
        step: round(RELEASE_CLIPS * cost / 60, 1) for step, cost in per_clip.items()
    }
    figures["release_estimate_core_minutes"]["total"] = round(
        sum(figures["release_estimate_core_minutes"].values()), 1
    )
    figures["load_average"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
