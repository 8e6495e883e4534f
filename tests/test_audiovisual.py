"""The audio-visual branch's parts: CREMA-D's metadata, media decoding, clip inputs, late
fusion, the modality comparison and the crowd's accuracy (fixtures in the release layout)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cremad_layout import BAD_MEDIA, build_cremad
from pipeline_support import DATA

from fairfer.audiovisual.clips import assemble, clip_status
from fairfer.audiovisual.fusion import choose_weight, fuse
from fairfer.audiovisual.modalities import compare_modalities, crowd_accuracy, release_clips
from fairfer.config_checks import audiovisual_problem
from fairfer.datasets import cremad
from fairfer.errors import DatasetError
from fairfer.media.audio import AudioSettings, check_voice, fixed_length, load_voice, log_mel
from fairfer.media.video import MediaError, frame_positions, sample_frames
from fairfer.training.models import ModelSpec, build_network

SHARED_CREMAD = DATA / "crema-d"
needs_cremad = pytest.mark.skipif(
    not (SHARED_CREMAD / "VideoDemographics.csv").is_file(),
    reason="needs the real CREMA-D metadata (../shared/data/crema-d)",
)
FAIRFACE_FILES = ("fairface_label_val.csv", "fairface-img-margin025-trainval.zip")


@pytest.fixture(scope="module")
def small_release(tmp_path_factory) -> Path:
    """Three actors speaking one sentence, plus the fixture's broken clips."""
    if not (SHARED_CREMAD / "VideoDemographics.csv").is_file():
        pytest.skip("needs the real CREMA-D metadata")
    root = tmp_path_factory.mktemp("cremad") / "CREMA-D"
    build_cremad(SHARED_CREMAD, DATA / "fairface", root, actors=["1005", "1011"], sentences=["TIE"])
    return root


def test_clip_names_are_parsed_as_the_release_names_them():
    assert cremad.parse_clip_name("1076_MTI_SAD_XX") == {
        "actor_id": "1076",
        "sentence": "MTI",
        "emotion_code": "SAD",
        "level": "XX",
    }
    assert cremad.parse_clip_name("1076_MTI_SAD") is None
    assert cremad.parse_clip_name("1076_XYZ_SAD_XX") is None


def test_crowd_votes_give_labels_and_credit():
    assert cremad.crowd_emotion("H") == ("happiness", "ok")
    assert cremad.crowd_emotion("A:H") == (None, "crowd_tie")
    assert cremad.crowd_emotion("") == (None, "no_crowd_rating")
    assert cremad.recognised("H", "happiness") == 1.0
    assert cremad.recognised("A:H", "happiness") == 0.5
    assert cremad.recognised("N", "happiness") == 0.0
    assert np.isnan(cremad.recognised("", "happiness"))


@needs_cremad
def test_clip_table_splits_by_actor_with_demographics_as_ground_truth(small_release):
    clips, rejects, report = cremad.clip_table(
        small_release,
        fractions={"train": 0.34, "valid": 0.33, "test": 0.33},
        seed=0,
        binning={"age": [0, 3, 10, 20, 30, 40, 50, 60, 70]},
    )
    # Every listed clip is a row or a reject.
    assert len(clips) + len(rejects) == report["clips_listed"] == 7442
    assert set(rejects["reason"]) == {"missing_file"}
    assert clips.groupby("actor_id")["split"].nunique().max() == 1
    demographics = pd.read_csv(SHARED_CREMAD / "VideoDemographics.csv", dtype=str)
    actor = demographics.set_index("ActorID").loc["1011"]
    row = clips[clips["actor_id"] == "1011"].iloc[0]
    assert row["gender"] == actor["Sex"]
    assert row["ethnicity"] == actor["Ethnicity"]
    # Caucasian / African American are FairFace's White / Black; ages binned as FairFace's.
    assert row["race"] == {"Caucasian": "White", "African American": "Black"}.get(
        actor["Race"], actor["Race"]
    )
    assert row["age"].count("-") == 1 or row["age"] == "more than 70"
    assert (clips["emotion"] == clips["intended_emotion"]).all()
    # No WAV: the video's own track is the voice.
    assert clips.set_index("clip_id").loc[BAD_MEDIA["no_audio"], "audio_path"] is None


@needs_cremad
def test_crowd_labels_and_ties(small_release):
    clips, _, _ = cremad.clip_table(
        small_release, label="face", fractions={"train": 0.5, "valid": 0.25, "test": 0.25}, seed=0
    )
    summary = cremad.read_summary(small_release)
    for row in clips.itertuples():
        vote = summary.loc[row.clip_id, "FaceVote"]
        if ":" in vote:
            assert row.label_status == "crowd_tie" and row.emotion is None
        else:
            assert row.emotion == cremad.VOTE_CODES[vote]
    with pytest.raises(DatasetError, match="datasets.cremad.label"):
        cremad.clip_table(small_release, label="smell", fractions={"train": 1.0}, seed=0)
    with pytest.raises(DatasetError, match="religion"):
        cremad.clip_table(
            small_release, fractions={"train": 1.0}, seed=0, extra_attributes=["religion"]
        )


def test_frames_are_evenly_spaced_centres():
    assert frame_positions(30, 3) == [5, 15, 25]
    assert frame_positions(2, 4) == [0, 1]
    assert frame_positions(0, 4) == []


@needs_cremad
def test_media_decode_and_bad_media_are_named(small_release):
    video = small_release / "VideoFlash" / "1005_TIE_HAP_XX.flv"
    frames = sample_frames(video, 4)
    assert len(frames.images) == 4 and frames.images[0].size == (480, 360)
    assert frames.times == sorted(frames.times) and frames.decoded > 4
    with pytest.raises(MediaError) as corrupt:
        sample_frames(small_release / "VideoFlash" / f"{BAD_MEDIA['corrupt_video']}.flv", 4)
    assert corrupt.value.reason == "corrupt_video"
    with pytest.raises(MediaError) as silent:
        load_voice(
            small_release / "VideoFlash" / f"{BAD_MEDIA['no_audio']}.flv",
            sample_rate=16000,
            source="video",
        )
    assert silent.value.reason == "no_audio"
    settings = AudioSettings()
    short = load_voice(
        small_release / "AudioWAV" / f"{BAD_MEDIA['audio_too_short']}.wav",
        sample_rate=16000,
        source="wav",
    )
    with pytest.raises(MediaError, match="audio_too_short"):
        check_voice(short, settings)
    # A 22.05 kHz WAV is resampled: same length in seconds, same spectrogram shape.
    resampled = load_voice(
        small_release / "AudioWAV" / f"{BAD_MEDIA['resampled']}.wav",
        sample_rate=16000,
        source="wav",
    )
    track = load_voice(
        small_release / "VideoFlash" / f"{BAD_MEDIA['resampled']}.flv",
        sample_rate=16000,
        source="video",
    )
    assert resampled.sample_rate_in == 22050 and track.sample_rate_in == 22050
    assert abs(len(resampled.waveform) - len(track.waveform)) < 0.1 * 16000
    assert log_mel(resampled.waveform, settings).shape == (settings.n_mels, settings.frames)


def test_fixed_length_crops_the_centre_and_pads_the_end():
    assert fixed_length(np.arange(10.0), 4).tolist() == [3, 4, 5, 6]
    assert fixed_length(np.ones(2), 4).tolist() == [1, 1, 0, 0]


def test_clip_status_needs_both_modalities():
    assert clip_status(3, "ok", "") == ("ok", "")
    assert clip_status(0, "ok", "")[0] == "no_face"
    status, detail = clip_status(0, "no_audio", "no audio track")
    assert status == "no_face" and "no_audio" in detail


def test_assemble_pools_only_frames_with_a_face():
    clips = pd.DataFrame(
        {"clip_id": ["a", "b"], "frame_ids": [["a:0", "a:1", "a:2"], ["b:0", "b:1"]]}
    )
    manifest = pd.DataFrame({"image_id": ["a", "b"], "split": ["train", "test"]})
    embeddings = pd.DataFrame(
        {
            "image_id": ["a:0", "a:1", "a:2", "b:0", "b:1"],
            "alignment_status": ["ok", "ok", "fallback", "fallback", "fallback"],
            "embedding": [np.full(4, v, np.float32) for v in (1.0, 3.0, 100.0, 5.0, 5.0)],
        }
    )
    audio = pd.DataFrame(
        {
            "clip_id": ["a", "b"],
            "status": ["ok", "ok"],
            "detail": ["", ""],
            "logmel": [np.zeros(6, np.float16), np.zeros(6, np.float16)],
        }
    )
    inputs = assemble(clips, manifest, embeddings, audio).set_index("image_id")
    assert inputs.loc["a", "visual"].tolist() == [2.0] * 4
    assert inputs.loc["a", "faces"] == 2 and inputs.loc["a", "frames"] == 3
    assert inputs.loc["b", "status"] == "no_face" and inputs.loc["b", "visual"] is None


def test_late_fusion_weight_is_chosen_on_valid():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    good = np.eye(3)[labels] * 0.6 + 0.4 / 3
    noise = rng.dirichlet(np.ones(3), 300)
    weight, grid = choose_weight(noise, good, labels, step=0.1)
    assert weight < 0.5
    fused_accuracy = ((weight * noise + (1 - weight) * good).argmax(1) == labels).mean()
    assert fused_accuracy >= (good.argmax(1) == labels).mean()
    assert len(grid) == 11

    def frame(p):
        return pd.DataFrame(
            {
                "image_id": [str(i) for i in range(len(p))],
                "y_true": np.array(["a", "b", "c"])[labels],
                "probabilities": list(p),
            }
        )

    shuffled = frame(good).sample(frac=1, random_state=0)
    _, fused, weight, _ = fuse(
        [frame(noise), shuffled], [frame(noise), shuffled], ["a", "b", "c"], step=0.1
    )
    # Rows are matched by id, not by position.
    assert (fused.argmax(1) == labels).mean() >= (good.argmax(1) == labels).mean()
    with pytest.raises(ValueError, match="same clips"):
        fuse([frame(noise), frame(good).iloc[:10]], [frame(noise)] * 2, ["a", "b", "c"], step=0.1)


def test_crowd_accuracy_resamples_actors_and_counts_ties():
    clips = pd.DataFrame(
        {
            "actor_id": ["1", "1", "2", "2", "3", "3"],
            "intended_emotion": ["anger"] * 6,
            "voice_vote": ["A", "A:H", "N", "N", "A", "A"],
            "face_vote": ["A"] * 6,
            "multimodal_vote": ["A", "A", "A", "A", "", "A"],
            "gender": ["Female", "Female", "Male", "Male", "Female", "Female"],
        }
    )
    table = crowd_accuracy(
        clips, attributes=["gender"], draws=200, level=0.95, seed=0, scope="test",
        min_group_size=1, min_actors=1,
    )  # fmt: skip
    audio = table[table["modality"] == "audio"].set_index("group")
    assert audio.loc["all", "recognition"] == pytest.approx((1 + 0.5 + 0 + 0 + 1 + 1) / 6)
    assert audio.loc["Female", "recognition"] == pytest.approx(3.5 / 4)
    assert audio.loc["Male", "recognition"] == 0.0
    assert audio.loc["gap", "recognition"] == pytest.approx(3.5 / 4)
    assert audio.loc["gap", "highest"] == "Female"
    # An unrated clip counts in no rate.
    multimodal = table[table["modality"] == "audio-visual"].set_index("group")
    assert multimodal.loc["all", "clips"] == 5
    assert table["published_rater_accuracy"].notna().all()


@needs_cremad
def test_release_clips_cover_the_whole_release():
    clips = release_clips(SHARED_CREMAD, binning={"age": [0, 20, 40, 60]}, value_aliases={})
    assert len(clips) == 7442 and clips["actor_id"].nunique() == 91
    assert clips["race"].isna().sum() == 82  # the one actor of race Unknown
    assert set(clips["age"].dropna()) <= {"20-39", "40-59", ">=60"}


def _predictions(model: str, correct: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    truth = np.array(["anger", "fear"])[np.arange(len(correct)) % 2]
    predicted = np.where(correct, truth, np.where(truth == "anger", "fear", "anger"))
    frame = pd.DataFrame(
        {
            "image_id": [f"c{i}" for i in range(len(correct))],
            "strategy": "baseline",
            "model": model,
            "seed": 0,
            "y_true": truth,
            "y_pred": predicted,
            "probabilities": [
                np.array([1.0, 0.0] if p == "anger" else [0.0, 1.0]) for p in predicted
            ],
            "gender": groups,
            "gender_source": "ground_truth",
            "gender_confidence": np.nan,
        }
    )
    for attribute in ("race", "age"):
        frame[attribute] = None
        frame[f"{attribute}_source"] = "ground_truth"
        frame[f"{attribute}_confidence"] = np.nan
    return frame


def test_modality_comparison_pairs_models_within_strategy():
    rng = np.random.default_rng(0)
    groups = np.array(["Female", "Male"] * 100)
    audio = rng.random(200) < np.where(groups == "Female", 0.9, 0.5)
    fused = rng.random(200) < 0.8
    predictions = pd.concat(
        [_predictions("audio_cnn", audio, groups), _predictions("fusion_late", fused, groups)]
    )
    result = compare_modalities(
        predictions, references=["audio_cnn"], attributes=["gender"], classes=["anger", "fear"],
        draws=200, seed=0,
    )  # fmt: skip
    table = result["over_seeds"]
    assert set(table["modality"]) == {"fusion_late"}
    assert set(table["reference"]) == {"audio_cnn"} and set(table["strategy"]) == {"baseline"}
    gap = table[table["metric"] == "accuracy_gap"].iloc[0]
    # The audio model's 0.4 sex gap against the fused model's about 0.
    assert gap["delta"] < -0.2 and gap["delta_ci_high"] < 0


def test_clip_networks_take_their_inputs():
    audio = ModelSpec.from_config(
        {"architecture": "audio_cnn", "input": "logmel", "width": 4, "epochs": 1}
    )
    network = build_network(audio, n_classes=6)
    logits, representation = network(torch.randn(3, 1, 16, 40))
    assert logits.shape == (3, 6) and representation.shape == (3, 32)
    fusion = ModelSpec.from_config(
        {"architecture": "fusion_net", "input": "audiovisual", "width": 4, "hidden": 8,
         "modality_dropout": 0.5, "epochs": 1}
    )  # fmt: skip
    network = build_network(fusion, n_classes=6, embedding_dim=5, audio_shape=(16, 40))
    network.train()
    logits, representation = network(torch.randn(4, 5 + 16 * 40))
    assert logits.shape == (4, 6) and representation.shape == (4, 8 + 32)
    with pytest.raises(ValueError, match="embedding_mlp reads"):
        ModelSpec.from_config({"architecture": "embedding_mlp", "input": "logmel"})
    with pytest.raises(ValueError, match="two components"):
        ModelSpec.from_config({"architecture": "late_fusion", "input": "posteriors"})
    with pytest.raises(ValueError, match="no network"):
        build_network(
            ModelSpec.from_config(
                {"architecture": "late_fusion", "input": "posteriors", "components": ["a", "b"]}
            ),
            n_classes=6,
        )


def _config(emotion: str, models: dict, trained: list[str], references: list[str]) -> dict:
    return {
        "emotion_dataset": emotion,
        "training": {"models": trained},
        "models": models,
        "audiovisual": {"references": references},
        "evaluation": {"datasets": []},
    }


def test_audiovisual_configuration_problems_name_the_key():
    models = {
        "compact_cnn": {"architecture": "compact_cnn", "input": "gray48"},
        "audio_cnn": {"architecture": "audio_cnn", "input": "logmel"},
        "visual_mlp": {"architecture": "embedding_mlp", "input": "clip_embeddings"},
        "fusion_late": {
            "architecture": "late_fusion",
            "input": "posteriors",
            "components": ["visual_mlp", "audio_cnn"],
        },
    }
    ok = _config("cremad", models, ["visual_mlp", "audio_cnn", "fusion_late"], ["audio_cnn"])
    assert audiovisual_problem(ok) is None
    images = _config("cremad", models, ["compact_cnn", "audio_cnn"], ["audio_cnn"])
    assert "training.models" in audiovisual_problem(images)
    clips_on_images = _config("ferplus", models, ["audio_cnn"], ["audio_cnn"])
    assert "cremad" in audiovisual_problem(clips_on_images)
    lonely = _config("cremad", models, ["audio_cnn", "fusion_late"], ["audio_cnn"])
    assert "models.fusion_late.components" in audiovisual_problem(lonely)
    unknown = _config("cremad", models, ["visual_mlp", "audio_cnn"], ["fusion_late"])
    assert "audiovisual.references" in audiovisual_problem(unknown)
