"""Tests for MTCNN detection and 5-point similarity alignment."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairfer.faces.alignment import AlignmentResult, FaceAligner, RetrySettings, encode_png
from fairfer.faces.geometry import (
    ARCFACE_TEMPLATE_112,
    canonical_template,
    similarity_transform,
    warp_to_template,
)
from fairfer.images import to_rgb

# The shared data sits beside the project checkout (see shared/data/README.md), or elsewhere
# named by $FAIRFER_DATA as for the pipeline tests.
DATA_DIR = Path(
    os.environ.get("FAIRFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FAIRFACE_ZIP = DATA_DIR / "fairface" / "fairface-img-margin025-trainval.zip"
FERPLUS_TRAIN = DATA_DIR / "ferplus" / "FER2013Train"
N_REAL = 8

needs_fairface = pytest.mark.skipif(
    not FAIRFACE_ZIP.is_file(), reason=f"FairFace zip not found at {FAIRFACE_ZIP}"
)
needs_ferplus = pytest.mark.skipif(
    not FERPLUS_TRAIN.is_dir(), reason=f"FER+ images not found at {FERPLUS_TRAIN}"
)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner()


@pytest.fixture(scope="module")
def fairface_images() -> list[Image.Image]:
    if not FAIRFACE_ZIP.is_file():
        pytest.skip(f"FairFace zip not found at {FAIRFACE_ZIP}")
    with zipfile.ZipFile(FAIRFACE_ZIP) as archive:
        images = []
        for i in range(1, N_REAL + 1):
            image = Image.open(io.BytesIO(archive.read(f"train/{i}.jpg")))
            image.load()
            images.append(image)
    return images


@pytest.fixture(scope="module")
def ferplus_images() -> list[Image.Image]:
    if not FERPLUS_TRAIN.is_dir():
        pytest.skip(f"FER+ images not found at {FERPLUS_TRAIN}")
    images = []
    for path in sorted(FERPLUS_TRAIN.glob("fer*.png"))[:N_REAL]:
        image = Image.open(path)
        image.load()
        images.append(image)
    return images


def _rotation_scale(angle: float, scale: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return scale * np.array([[cos, -sin], [sin, cos]])


def _assert_valid_results(
    results: list[AlignmentResult | None], images: list[Image.Image], min_ok: int
) -> None:
    assert len(results) == len(images)
    n_ok = 0
    for result, image in zip(results, images, strict=True):
        assert isinstance(result, AlignmentResult)
        assert result.crop.size == (160, 160)
        assert result.crop.mode == "RGB"
        if result.status == "ok":
            n_ok += 1
            assert result.box.shape == (4,)
            assert result.landmarks.shape == (5, 2)
            assert 0.7 < result.probability <= 1.0
            width, height = image.size
            assert (result.landmarks >= -1).all()
            assert (result.landmarks[:, 0] <= width).all()
            assert (result.landmarks[:, 1] <= height).all()
            assert result.box[0] < result.landmarks[:, 0].min()
            assert result.box[2] > result.landmarks[:, 0].max()
        else:
            assert result.status == "fallback"
            assert result.box is None and result.landmarks is None and result.probability is None
    assert n_ok >= min_ok


# --- geometry -------------------------------------------------------------------------------


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, size=(5, 2))
    linear = _rotation_scale(0.3, 1.7)
    translation = np.array([5.0, -3.0])
    target = source @ linear.T + translation

    matrix = similarity_transform(source, target)

    np.testing.assert_allclose(matrix[:, :2], linear, atol=1e-10)
    np.testing.assert_allclose(matrix[:, 2], translation, atol=1e-10)


def test_similarity_transform_never_reflects():
    source = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [7.0, 9.0]])
    mirrored = source * np.array([-1.0, 1.0])

    matrix = similarity_transform(source, mirrored)

    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (np.zeros((5, 3)), np.zeros((5, 3)), "shape"),
        (np.zeros((1, 2)), np.zeros((1, 2)), "shape"),
        (np.ones((5, 2)), np.zeros((5, 2)), "coincide"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "finite"),
    ],
)
def test_similarity_transform_rejects_bad_input(source, target, message):
    with pytest.raises(ValueError, match=message):
        similarity_transform(source, target)


def test_canonical_template_reproduces_arcface_at_112():
    np.testing.assert_allclose(canonical_template(112, 1.0), ARCFACE_TEMPLATE_112, atol=1e-12)


@pytest.mark.parametrize(("image_size", "face_scale"), [(160, 0.8), (160, 1.15), (48, 1.0)])
def test_canonical_template_properties(image_size, face_scale):
    template = canonical_template(image_size, face_scale)
    left_eye, right_eye, nose, left_mouth, right_mouth = template

    assert template.shape == (5, 2)
    assert abs(left_eye[1] - right_eye[1]) < 0.01 * image_size
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_eye[1] < nose[1] < left_mouth[1]
    assert left_mouth[0] < right_mouth[0]
    assert (template > 0).all() and (template < image_size - 1).all()
    eye_mid_x = (left_eye[0] + right_eye[0]) / 2
    assert abs(eye_mid_x - (image_size - 1) / 2) < 0.01 * image_size


def test_canonical_template_shrinks_about_centre():
    centre = (160 - 1) / 2
    loose = canonical_template(160, 0.5) - centre
    tight = canonical_template(160, 1.0) - centre
    np.testing.assert_allclose(loose, 0.5 * tight, atol=1e-12)


@pytest.mark.parametrize(("image_size", "face_scale"), [(0, 0.8), (160, 0.0), (160, 3.0)])
def test_canonical_template_rejects_bad_arguments(image_size, face_scale):
    with pytest.raises(ValueError):
        canonical_template(image_size, face_scale)


def _blob_image(points: np.ndarray, size: tuple[int, int], sigma: float) -> Image.Image:
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    canvas = np.zeros((size[1], size[0]))
    for x, y in points:
        canvas += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return Image.fromarray(np.clip(canvas * 255, 0, 255).astype(np.uint8))


def test_warp_maps_landmarks_onto_template():
    image_size = 160
    template = canonical_template(image_size, 0.8)
    # Place the landmarks in a larger source image by a known rotation, scale and shift.
    linear = _rotation_scale(-0.4, 1.6)
    landmarks = template @ linear.T + np.array([40.0, 25.0])
    source = _blob_image(landmarks, size=(320, 280), sigma=3.0)

    crop = warp_to_template(source, landmarks, image_size=image_size, template=template)

    assert crop.size == (image_size, image_size)
    assert crop.mode == "RGB"
    values = np.asarray(crop, dtype=np.float64)[..., 0]
    ys, xs = np.mgrid[0:image_size, 0:image_size]
    for x, y in template:
        window = (np.abs(xs - x) <= 6) & (np.abs(ys - y) <= 6)
        weights = values * window
        centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        np.testing.assert_allclose(centroid, [x, y], atol=0.25)


def test_padding_and_upscaling_map_back_to_original_coordinates(monkeypatch):
    padding_aligner = FaceAligner(pad_fraction=0.25, upscale_min_side=160)
    points = np.array([[15.3, 18.2], [32.6, 17.9], [24.1, 27.5], [17.0, 36.2], [31.4, 36.0]])
    image = _blob_image(points, size=(48, 48), sigma=1.5)
    pad, scale = 12, 160 / 72
    ys, xs = np.mgrid[0:160, 0:160]

    def fake_detect(batch, thresholds):
        # Measure where the padded, upscaled image really puts each blob, as MTCNN would.
        frame = batch[0, ..., 0].astype(np.float64)
        found = []
        for guess in (points + pad) * scale:
            weights = frame * (np.hypot(xs - guess[0], ys - guess[1]) <= 7)
            found.append([(weights * xs).sum(), (weights * ys).sum()] / weights.sum())
        found = np.array(found)
        box = np.r_[found.min(axis=0) - 10, found.max(axis=0) + 10, 0.99]
        return [(box[None, :], found[None, :, :])]

    monkeypatch.setattr(padding_aligner, "_detect", fake_detect)

    (result,) = padding_aligner.align([image])

    assert result.status == "ok"
    np.testing.assert_allclose(result.landmarks, points, atol=0.1)


def test_downscaling_a_huge_image_maps_back_to_original_coordinates(monkeypatch):
    shrinking = FaceAligner(pad_fraction=0.25, upscale_min_side=160, max_detector_side=200)
    points = np.array([[190.0, 230.0], [410.0, 226.0], [300.0, 340.0], [215.0, 450.0]])
    points = np.vstack([points, [[392.0, 447.0]]])
    image = _blob_image(points, size=(600, 640), sigma=14.0)
    prepared = shrinking._prepare(to_rgb(image), 0.25)
    height, width = prepared.detector_array.shape[:2]
    assert max(height, width) <= 201
    ys, xs = np.mgrid[0:height, 0:width]

    def fake_detect(batch, thresholds):
        frame = batch[0, ..., 0].astype(np.float64)
        found = []
        scale = np.asarray(prepared.scale)
        for guess in (points + 0.5 + np.asarray(prepared.pad)) * scale - 0.5:
            weights = frame * (np.hypot(xs - guess[0], ys - guess[1]) <= 5)
            found.append([(weights * xs).sum(), (weights * ys).sum()] / weights.sum())
        found = np.array(found)
        box = np.r_[found.min(axis=0) - 10, found.max(axis=0) + 10, 0.99]
        return [(box[None, :], found[None, :, :])]

    monkeypatch.setattr(shrinking, "_detect", fake_detect)

    (result,) = shrinking.align([image])

    assert result.status == "ok"
    # One detector pixel is about 4.5 source pixels here.
    np.testing.assert_allclose(result.landmarks, points, atol=1.0)


def test_retry_pass_runs_only_on_misses_with_its_own_settings(monkeypatch):
    retry = RetrySettings(pad_fraction=0.5, thresholds=(0.5, 0.6, 0.6))
    aligner = FaceAligner(pad_fraction=0.25, upscale_min_side=0, retry=retry)
    face = np.array([[15.0, 18.0], [32.0, 18.0], [24.0, 27.0], [17.0, 36.0], [31.0, 36.0]])
    calls = []

    def fake_detect(batch, thresholds):
        calls.append((batch.shape, tuple(thresholds)))
        results = []
        for frame in batch:
            # The first image has a face for every pass; the second only for the retry's
            # lower thresholds; the third never.
            marker = int(frame[frame.shape[0] // 2, frame.shape[1] // 2, 0])
            pad = (frame.shape[1] - 48) / 2
            found = marker == 1 or (marker == 2 and thresholds[0] < 0.6)
            if found:
                box = np.r_[face.min(axis=0) - 5 + pad, face.max(axis=0) + 5 + pad, 0.9]
                results.append((box[None, :], (face + pad)[None, :, :]))
            else:
                results.append((np.zeros((0, 5)), np.zeros((0, 5, 2))))
        return results

    monkeypatch.setattr(aligner, "_detect", fake_detect)
    images = [Image.new("L", (48, 48), marker) for marker in (1, 2, 3)]

    results = aligner.align(images)

    assert [r.status for r in results] == ["ok", "ok", "fallback"]
    assert [r.detection_pass for r in results] == [1, 2, 0]
    assert calls == [((3, 72, 72, 3), (0.6, 0.7, 0.7)), ((2, 96, 96, 3), (0.5, 0.6, 0.6))]


def test_retry_settings_are_validated():
    with pytest.raises(ValueError, match="thresholds"):
        FaceAligner(retry=RetrySettings(pad_fraction=0.5, thresholds=(0.5, 0.6)))


# --- images and modes -----------------------------------------------------------------------


def test_to_rgb_rescales_sixteen_bit_instead_of_clipping():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"

    rgb = np.asarray(to_rgb(image))

    assert rgb.shape == (1, 3, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255])


def test_encode_png_round_trips():
    image = Image.fromarray(np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3))

    data = encode_png(image)

    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_face_size": 5},
        {"thresholds": (0.6, 0.7)},
        {"factor": 1.2},
        {"pad_fraction": -0.1},
        {"upscale_min_side": -1},
        {"max_detector_side": -1},
        {"fallback": "skip"},
        {"batch_size": 0},
    ],
)
def test_aligner_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        FaceAligner(**kwargs)


def test_align_rejects_non_images(aligner):
    with pytest.raises(TypeError, match=r"images\[1\]"):
        aligner.align([Image.new("RGB", (32, 32)), np.zeros((32, 32, 3))])


def test_align_empty_input(aligner):
    assert aligner.align([]) == []


def test_blank_and_noise_images_fall_back(aligner):
    rng = np.random.default_rng(0)
    blank = Image.new("RGB", (224, 160), (128, 128, 128))
    noise = Image.fromarray(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8))
    tiny = Image.new("L", (10, 10), 0)

    results = aligner.align([blank, noise, tiny])

    _assert_valid_results(results, [blank, noise, tiny], min_ok=0)
    assert [r.status for r in results] == ["fallback"] * 3


def test_reject_returns_none_without_face():
    rejecting = FaceAligner(fallback="reject")

    assert rejecting.align([Image.new("RGB", (64, 64))]) == [None]


# --- real data ------------------------------------------------------------------------------


@needs_fairface
def test_align_fairface(aligner, fairface_images):
    results = aligner.align(fairface_images)

    _assert_valid_results(results, fairface_images, min_ok=N_REAL - 2)


@needs_fairface
def test_batched_matches_per_image(fairface_images):
    images = fairface_images[:4]
    batched = FaceAligner(batch_size=len(images)).align(images)
    single = FaceAligner(batch_size=1).align(images)

    for a, b in zip(batched, single, strict=True):
        assert a.status == b.status
        if a.status == "ok":
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)


@needs_ferplus
def test_align_ferplus(aligner, ferplus_images):
    results = aligner.align(ferplus_images)

    _assert_valid_results(results, ferplus_images, min_ok=N_REAL - 2)


@needs_fairface
@needs_ferplus
def test_mixed_sizes_keep_input_order(aligner, fairface_images, ferplus_images):
    images = [fairface_images[0], ferplus_images[0], fairface_images[1], ferplus_images[1]]
    alone = aligner.align(fairface_images[:2])

    results = aligner.align(images)

    assert len(results) == 4
    assert results[1].crop.size == results[0].crop.size == (160, 160)
    for mixed, single in zip([results[0], results[2]], alone, strict=True):
        assert mixed.status == single.status
        if mixed.status == "ok":
            np.testing.assert_allclose(mixed.box, single.box, atol=1e-4)


@needs_fairface
@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_align_accepts_any_mode(aligner, fairface_images, mode):
    image = fairface_images[0]
    if mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        converted = Image.fromarray(gray)
        assert converted.mode == "I;16"
    else:
        converted = image.convert(mode)

    (result,) = aligner.align([converted])

    assert result.status == "ok"
    assert result.crop.mode == "RGB" and result.crop.size == (160, 160)


@needs_fairface
def test_huge_photograph_is_detected_on_a_bounded_detector_input(aligner, fairface_images):
    image = fairface_images[0]
    (reference,) = aligner.align([image])
    huge = image.resize((image.width * 12, image.height * 12), Image.Resampling.BICUBIC)
    prepared = aligner._prepare(to_rgb(huge), aligner.pad_fraction)
    assert max(prepared.detector_array.shape[:2]) <= aligner.max_detector_side + 1

    (result,) = aligner.align([huge])

    assert result.status == "ok" and reference.status == "ok"
    expected = (reference.landmarks + 0.5) * 12 - 0.5
    np.testing.assert_allclose(result.landmarks, expected, atol=0.03 * huge.width)
