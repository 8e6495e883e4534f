"""Tests of fairfer.training.augmentation on tiny synthetic images and cell tables."""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairfer.training.augmentation import (
    APPLIED_KEYS,
    AugmentationParams,
    apply_plan,
    augment_image,
    balanced_oversampling_plan,
    cell_counts,
)

#: Switches every step off, so a test can turn on exactly the one it checks.
NOTHING = AugmentationParams(
    flip_probability=0.0,
    max_rotation_deg=0.0,
    brightness_jitter=0.0,
    contrast_jitter=0.0,
    blur_probability=0.0,
    max_blur_radius=0.0,
    noise_probability=0.0,
    max_noise_std=0.0,
)


def gradient(mode: str, width: int = 20, height: int = 16, *, low: int = 60) -> Image.Image:
    """A gradient in ``mode`` with no left-right symmetry; colour values in [0.8 * low, 255]."""
    x = np.linspace(low, 255, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    base = np.rint(x * (0.8 + 0.2 * y)).astype(np.uint8)
    bands = {
        "L": [base],
        "LA": [base, np.full_like(base, 200)],
        "RGB": [base, base[::-1], np.full_like(base, 150)],
        "RGBA": [
            base,
            base[::-1],
            np.full_like(base, 150),
            np.tile(np.arange(width) * 10, (height, 1)).astype(np.uint8),
        ],
    }[mode]
    return Image.merge(mode, [Image.fromarray(np.ascontiguousarray(b)) for b in bands])


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_augment_is_deterministic_and_keeps_mode_and_size(mode: str) -> None:
    image = gradient(mode)
    params = AugmentationParams(blur_probability=1.0, noise_probability=1.0)
    first, applied_first = augment_image(image, np.random.default_rng(7), params)
    second, applied_second = augment_image(image, np.random.default_rng(7), params)
    other, applied_other = augment_image(image, np.random.default_rng(8), params)

    assert (first.mode, first.size) == (image.mode, image.size)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert applied_first == applied_second
    assert applied_first != applied_other
    assert tuple(applied_first) == APPLIED_KEYS
    assert isinstance(applied_first["flipped"], bool)
    assert all(type(applied_first[k]) is float for k in APPLIED_KEYS[1:])
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_applied_values_stay_in_their_ranges() -> None:
    params = AugmentationParams()
    image = gradient("L")
    for seed in range(50):
        _, applied = augment_image(image, np.random.default_rng(seed), params)
        assert abs(applied["rotation_deg"]) <= params.max_rotation_deg
        assert 0.8 <= applied["brightness"] <= 1.2
        assert 0.8 <= applied["contrast"] <= 1.2
        assert 0.0 <= applied["blur_radius"] <= params.max_blur_radius
        assert 0.0 <= applied["noise_std"] <= params.max_noise_std


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_all_steps_off_is_identity(mode: str) -> None:
    image = gradient(mode)
    out, applied = augment_image(image, np.random.default_rng(0), NOTHING)
    assert np.array_equal(np.asarray(out), np.asarray(image))
    assert applied == {
        "flipped": False,
        "rotation_deg": 0.0,
        "brightness": 1.0,
        "contrast": 1.0,
        "blur_radius": 0.0,
        "noise_std": 0.0,
    }


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_flip_mirrors_left_right(mode: str) -> None:
    image = gradient(mode)
    params = replace(NOTHING, flip_probability=1.0)
    out, applied = augment_image(image, np.random.default_rng(0), params)
    assert applied["flipped"] is True
    assert np.array_equal(np.asarray(out), np.asarray(image)[:, ::-1])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_rotation_keeps_size_and_leaves_no_black_corners(mode: str) -> None:
    image = gradient(mode, 24, 18, low=120)
    params = replace(NOTHING, max_rotation_deg=10.0)
    angles = []
    for seed in range(8):
        out, applied = augment_image(image, np.random.default_rng(seed), params)
        angles.append(applied["rotation_deg"])
        pixels = np.asarray(out)
        assert (out.mode, out.size) == (image.mode, image.size)
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]].reshape(4, -1)
        # Each band's corners stay near the bright image's values instead of black fill.
        assert corners[:, : 3 if mode != "L" else 1].min() >= 90, (seed, corners)
        assert not np.array_equal(pixels, np.asarray(image))
    assert all(0.0 < abs(a) <= 10.0 for a in angles)
    assert min(angles) < 0 < max(angles)


def test_photometric_steps_leave_alpha_alone() -> None:
    image = gradient("RGBA")
    params = replace(
        NOTHING,
        brightness_jitter=0.5,
        contrast_jitter=0.5,
        blur_probability=1.0,
        max_blur_radius=2.0,
        noise_probability=1.0,
        max_noise_std=20.0,
    )
    out, applied = augment_image(image, np.random.default_rng(3), params)
    assert applied["blur_radius"] > 0 and applied["noise_std"] > 0
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(image)[..., 3])
    assert not np.array_equal(np.asarray(out)[..., :3], np.asarray(image)[..., :3])


def test_brightness_scales_a_flat_image() -> None:
    image = Image.new("L", (8, 8), 100)
    params = replace(NOTHING, brightness_jitter=0.3)
    out, applied = augment_image(image, np.random.default_rng(1), params)
    assert np.all(np.asarray(out) == round(100 * applied["brightness"]))


def test_unsupported_mode_and_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="mode 'P'.*convert"):
        augment_image(Image.new("P", (4, 4)), np.random.default_rng(0), AugmentationParams())
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentationParams(flip_probability=1.5)
    with pytest.raises(ValueError, match="brightness_jitter"):
        AugmentationParams(brightness_jitter=1.0)
    with pytest.raises(ValueError, match="max_noise_std"):
        AugmentationParams(max_noise_std=-1.0)


def make_cells() -> pd.DataFrame:
    """Cells of sizes 5, 3, 2, 1 and one empty cell (Black/sad)."""
    sizes = {("White", "happy"): 5, ("White", "sad"): 3, ("Black", "happy"): 2, ("Asian", "sad"): 1}
    rows = [
        {"image_id": f"{race}-{emotion}-{i}", "race": race, "emotion": emotion}
        for (race, emotion), n in sizes.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def sizes_of(plan: pd.DataFrame) -> dict[tuple[str, str], int]:
    return plan.groupby(["race", "emotion"]).size().to_dict()


def test_plan_balances_to_max_and_keeps_originals(caplog: pytest.LogCaptureFixture) -> None:
    cells = make_cells()
    with caplog.at_level(logging.WARNING, logger="fairfer.training.augmentation"):
        plan = balanced_oversampling_plan(cells, cell_columns=["race", "emotion"], seed=0)

    assert list(plan.columns) == [
        "sample_id",
        "source_image_id",
        "race",
        "emotion",
        "is_augmented",
        "augmentation_seed",
    ]
    assert set(sizes_of(plan).values()) == {5}
    assert len(sizes_of(plan)) == 4
    assert "Black" in caplog.text and "sad" in caplog.text and "empty" in caplog.text

    originals = plan[~plan["is_augmented"]]
    assert originals["sample_id"].tolist() == cells["image_id"].tolist()
    assert originals["source_image_id"].tolist() == cells["image_id"].tolist()
    assert originals["augmentation_seed"].isna().all()

    copies = plan[plan["is_augmented"]]
    assert len(copies) == 4 * 5 - len(cells)
    assert plan["sample_id"].is_unique
    assert copies["augmentation_seed"].notna().all() and copies["augmentation_seed"].is_unique
    assert copies["sample_id"].str.fullmatch(r".+#aug\d+").all()
    # A copy inherits its source's cell.
    source_cells = cells.set_index("image_id").loc[copies["source_image_id"], ["race", "emotion"]]
    assert np.array_equal(source_cells.to_numpy(), copies[["race", "emotion"]].to_numpy())


def test_plan_is_reproducible_with_its_seed() -> None:
    cells = make_cells()
    kwargs = {"cell_columns": ["race", "emotion"], "target": 40}
    first = balanced_oversampling_plan(cells, seed=11, **kwargs)
    pd.testing.assert_frame_equal(first, balanced_oversampling_plan(cells, seed=11, **kwargs))
    other = balanced_oversampling_plan(cells, seed=12, **kwargs)
    assert not first["source_image_id"].equals(other["source_image_id"])
    assert not first["augmentation_seed"].equals(other["augmentation_seed"])


def test_median_and_int_targets_keep_large_cells_whole() -> None:
    cells = make_cells()
    median = balanced_oversampling_plan(
        cells, cell_columns=["race", "emotion"], target="median", seed=0
    )
    # Sizes 5, 3, 2, 1: median 2.5, rounded up to 3.
    assert sizes_of(median) == {
        ("White", "happy"): 5,
        ("White", "sad"): 3,
        ("Black", "happy"): 3,
        ("Asian", "sad"): 3,
    }
    fixed = balanced_oversampling_plan(cells, cell_columns=["race", "emotion"], target=4, seed=0)
    assert sizes_of(fixed)[("White", "happy")] == 5
    assert sizes_of(fixed)[("Asian", "sad")] == 4


def test_copy_cap_leaves_cells_below_target(caplog: pytest.LogCaptureFixture) -> None:
    cells = make_cells()
    with caplog.at_level(logging.WARNING, logger="fairfer.training.augmentation"):
        plan = balanced_oversampling_plan(
            cells, cell_columns=["race", "emotion"], seed=0, max_copies_per_image=2
        )
    assert sizes_of(plan) == {
        ("White", "happy"): 5,
        ("White", "sad"): 5,
        ("Black", "happy"): 5,
        ("Asian", "sad"): 3,  # 1 image + at most 2 copies
    }
    assert plan[plan["is_augmented"]]["source_image_id"].value_counts().max() <= 2
    assert "below the target" in caplog.text


def test_single_cell_column_and_missing_values() -> None:
    cells = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "race": ["X", "X", "Y", None]})
    plan = balanced_oversampling_plan(cells, cell_columns=["race"], seed=0)
    assert plan["race"].value_counts().to_dict() == {"X": 2, "Y": 2}
    assert plan.loc[~plan["is_augmented"], "sample_id"].tolist() == ["a", "b", "c", "d"]


def test_plan_rejects_bad_input() -> None:
    cells = make_cells()
    with pytest.raises(ValueError, match="lacks column.*'age'"):
        balanced_oversampling_plan(cells, cell_columns=["age"], seed=0)
    with pytest.raises(ValueError, match="unique"):
        balanced_oversampling_plan(pd.concat([cells, cells]), cell_columns=["race"], seed=0)
    with pytest.raises(ValueError, match="target='mean'"):
        balanced_oversampling_plan(cells, cell_columns=["race"], target="mean", seed=0)
    with pytest.raises(ValueError, match="max_copies_per_image=0"):
        balanced_oversampling_plan(cells, cell_columns=["race"], seed=0, max_copies_per_image=0)


def test_apply_plan_regenerates_copies_independently_of_order() -> None:
    cells = pd.DataFrame({"image_id": ["g0", "g1", "c0"], "kind": ["gray", "gray", "color"]})
    images = {
        "g0": png_bytes(gradient("L")),
        "g1": png_bytes(gradient("L", low=90)),
        "c0": png_bytes(gradient("RGB")),
    }
    plan = balanced_oversampling_plan(cells, cell_columns=["kind"], target=3, seed=5)
    params = AugmentationParams()

    forward = {sid: (data, applied) for sid, data, applied in apply_plan(plan, images, params)}
    backward = {sid: data for sid, data, _ in apply_plan(plan.iloc[::-1], images, params)}

    assert list(forward) == plan["sample_id"].tolist()
    assert {sid: data for sid, (data, _) in forward.items()} == backward
    for row in plan.itertuples():
        data, applied = forward[row.sample_id]
        source = Image.open(io.BytesIO(images[row.source_image_id]))
        if not row.is_augmented:
            assert data is images[row.source_image_id] and applied == {}
            continue
        copy = Image.open(io.BytesIO(data))
        assert (copy.format, copy.mode, copy.size) == ("PNG", source.mode, source.size)
        assert tuple(applied) == APPLIED_KEYS

    with pytest.raises(ValueError, match="no image bytes.*'c0'"):
        list(apply_plan(plan, {"g0": images["g0"], "g1": images["g1"]}, params))


def test_cell_counts_reports_before_and_after() -> None:
    plan = balanced_oversampling_plan(
        make_cells(), cell_columns=["race", "emotion"], seed=0, max_copies_per_image=2
    )
    counts = cell_counts(plan)
    assert list(counts.columns) == ["race", "emotion", "n_before", "n_augmented", "n_after"]
    asian = counts.set_index(["race", "emotion"]).loc[("Asian", "sad")]
    assert (asian["n_before"], asian["n_augmented"], asian["n_after"]) == (1, 2, 3)
    assert counts["n_before"].sum() == len(make_cells())
    assert counts["n_after"].sum() == len(plan)


@pytest.mark.parametrize("mode", ["I;16", "P", "CMYK"])
def test_apply_plan_augments_sources_of_any_pixel_format(mode: str) -> None:
    rgb = gradient("RGB")
    if mode == "I;16":
        source = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    else:
        source = rgb.convert(mode)
    buffer = io.BytesIO()
    source.save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == mode
    cells = pd.DataFrame({"image_id": ["a", "b"], "kind": ["x", "y"]})
    plan = balanced_oversampling_plan(
        pd.concat([cells, cells.iloc[[1]].assign(image_id="c")]),
        cell_columns=["kind"],
        target=2,
        seed=0,
    )
    images = dict.fromkeys(["a", "b", "c"], buffer.getvalue())

    copies = [data for _, data, applied in apply_plan(plan, images, NOTHING) if applied]

    assert copies
    for data in copies:
        copy = Image.open(io.BytesIO(data))
        assert copy.mode == "RGB" and copy.size == source.size
        # With every step off the copy is the source's pixels, 16-bit ones rescaled, not clipped.
        expected = rgb.convert("L") if mode == "I;16" else rgb.convert(mode).convert("RGB")
        tolerance = 1 if mode == "CMYK" else 0
        difference = np.abs(
            np.asarray(copy.convert("L"), dtype=int) - np.asarray(expected.convert("L"), dtype=int)
        )
        assert difference.max() <= tolerance
