"""Rendering FairFace like an emotion dataset's images (fairfer.group_labels.rendering)."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fairfer.group_labels.rendering import (
    DOMAIN_DATASET,
    DomainRender,
    render_batches,
    render_image,
)
from fairfer.schemas import MANIFEST


def _photo(width=224, height=224):
    """A colour image whose centre square is red and whose border is blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    cy, cx = height // 2, width // 2
    pixels[cy - height // 3 : cy + height // 3, cx - width // 3 : cx + width // 3] = [255, 0, 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_ferplus_render_is_a_48px_grayscale_centre_crop():
    rendered = Image.open(io.BytesIO(render_image(_photo(), DomainRender(48, True, 0.6))))
    assert rendered.size == (48, 48) and rendered.mode == "L" and rendered.format == "PNG"
    # The crop keeps only the red centre: uniform gray, no blue border left.
    values = np.asarray(rendered, dtype=float)
    assert values.std() < 3 and abs(values.mean() - 76) < 6  # ITU-R 601 luma of red


def test_colour_render_keeps_the_border_when_the_crop_is_loose():
    rendered = Image.open(io.BytesIO(render_image(_photo(300, 200), DomainRender(100, False, 1.0))))
    assert rendered.size == (100, 100) and rendered.mode == "RGB"
    pixels = np.asarray(rendered)
    assert pixels[50, 50, 0] > 200 and pixels[2, 50, 2] > 200  # red centre, blue border


@pytest.mark.parametrize("size, fraction", [(4, 0.5), (48, 0.0), (48, 1.5)])
def test_bad_render_settings_are_rejected(size, fraction):
    with pytest.raises(ValueError):
        DomainRender(size, True, fraction)


def test_render_batches_keep_ids_and_labels_of_the_chosen_splits():
    rows = [
        {
            "image_id": f"{split}/{i}",
            "dataset": "fairface",
            "split": split,
            "source_path": f"{split}/{i}.jpg",
            "emotion": None,
            "label_status": "ok",
            "emotion_votes": None,
            "race": "White",
            "gender": "Female",
            "age": "20-29",
            "subject_id": None,
            "image": _photo(),
        }
        for split in ("train", "valid")
        for i in range(3)
    ]
    batch = pa.RecordBatch.from_pylist(rows, schema=MANIFEST)
    out = list(
        render_batches([batch], DomainRender(48, True, 0.7), splits=["valid"], schema=MANIFEST)
    )
    table = pa.Table.from_batches(out)
    assert table["image_id"].to_pylist() == ["valid/0", "valid/1", "valid/2"]
    assert set(table["dataset"].to_pylist()) == {DOMAIN_DATASET}
    assert set(table["race"].to_pylist()) == {"White"}
    assert Image.open(io.BytesIO(table["image"][0].as_py())).size == (48, 48)
