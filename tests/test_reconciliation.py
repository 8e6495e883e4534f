"""Every stage either processes a row or records it as a reject with a reason.

Ingest (source rows = manifest + ingest rejects), alignment (manifest = ok + fallback +
rejected, over all shards) and embedding (aligned and not rejected = embedded), on small inputs
that hold every kind of bad file: missing, zero-byte, truncated, corrupt, not an image, too
large, duplicate ids, and valid images in every pixel format.
"""

import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fairfer.rule_inputs import rule_script
from fairfer.schemas import INGEST_REJECTS, MANIFEST, publish_manifest, write_parquet

align_shard = rule_script("align_faces").align_shard
embed_shard = rule_script("embed_faces").embed_shard

# The tests lower Pillow's decompression-bomb limit, so ordinary crops pass it with a warning.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

ALIGNMENT = {
    "image_size": 160,
    "face_scale": 1.0,
    "min_face_size": 20,
    "thresholds": [0.6, 0.7, 0.7],
    "retry": None,
    "fallback": "whole_frame",
    "batch_size": 4,
    "pad_fraction": 0.25,
    "upscale_min_side": 160,
    "max_detector_side": 1024,
}


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def good_images() -> dict[str, bytes]:
    """Valid images in the pixel formats datasets come in."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8))
    sixteen_bit = Image.fromarray(rng.integers(0, 65535, (48, 48), dtype=np.uint16))
    assert sixteen_bit.mode == "I;16"
    return {
        "gray.png": encoded(rgb.convert("L")),
        "rgb.jpg": encoded(rgb, "JPEG"),
        "rgba.png": encoded(rgb.convert("RGBA")),
        "palette.png": encoded(rgb.convert("P")),
        "sixteen_bit.png": encoded(sixteen_bit),
    }


def bad_images() -> dict[str, tuple[bytes, str]]:
    """Files that cannot be used, with the reason ingest must record."""
    jpeg = encoded(Image.new("RGB", (64, 64), (90, 20, 20)), "JPEG")
    png = encoded(Image.new("L", (64, 64), 7))
    return {
        "zero_byte.png": (b"", "undecodable_image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "undecodable_image"),
        "header_only.png": (png[:40], "undecodable_image"),
        "not_an_image.png": (b"id,emotion\n1,happy\n", "undecodable_image"),
    }


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A dataset folder and its adapter-style manifest (no image bytes) with every case."""
    root = tmp_path / "images"
    root.mkdir()
    files = {**good_images(), **{name: data for name, (data, _) in bad_images().items()}}
    # Over twice the decompression-bomb limit set below (the 160x160 crops stay under it).
    files["huge.png"] = encoded(Image.new("L", (250, 250)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "a_directory.png").mkdir()
    names = [*files, "missing.png", "a_directory.png", "gray.png"]
    ids = [name.rsplit(".", 1)[0] for name in names]
    ids[-1] = "rgb"  # a second row with an id already taken
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "dataset": "toy",
            "split": ["train", "test"] * (len(names) // 2) + ["train"] * (len(names) % 2),
            "source_path": names,
            "emotion": "happiness",
            "label_status": "ok",
            "emotion_votes": None,
            "race": None,
            "gender": None,
            "age": None,
            "subject_id": None,
        }
    )
    return root, manifest


def test_ingest_keeps_usable_images_and_records_the_rest(dataset, tmp_path):
    root, manifest = dataset
    paths = {name: tmp_path / name for name in ("m.parquet", "r.json", "rejects.parquet")}
    report = publish_manifest(
        manifest,
        root,
        paths["m.parquet"],
        {"adapter_count": 1},
        paths["r.json"],
        rejects_path=paths["rejects.parquet"],
        batch_rows=4,
    )
    published = pq.read_table(paths["m.parquet"])
    rejects = pq.read_table(paths["rejects.parquet"]).to_pandas()
    assert published.schema.equals(MANIFEST, check_metadata=False)
    assert pq.read_schema(paths["rejects.parquet"]).equals(INGEST_REJECTS)

    assert sorted(published["image_id"].to_pylist()) == sorted(
        name.rsplit(".", 1)[0] for name in good_images()
    )
    reasons = dict(zip(rejects["source_path"], rejects["reason"], strict=True))
    expected = {name: reason for name, (_, reason) in bad_images().items()}
    expected |= {"huge.png": "image_too_large", "missing.png": "missing_file"}
    expected["a_directory.png"] = "unreadable_file"
    expected["gray.png"] = "duplicate_image_id"
    assert reasons == expected
    duplicate = rejects.set_index("source_path").loc["gray.png"]
    assert duplicate["image_id"] == "rgb" and duplicate["detail"] == "also rgb.jpg"
    assert rejects["detail"].str.len().gt(0).all()

    assert report == json.loads(paths["r.json"].read_text())
    assert report["adapter_count"] == 1
    assert report["rows_in"] == len(manifest) == report["rows"] + len(rejects)
    assert report["rows"] == published.num_rows
    assert sum(report["rejected"].values()) == len(rejects)
    assert sum(report["rows_by_split"].values()) == report["rows"]


def test_ingest_output_does_not_depend_on_the_batch_size(dataset, tmp_path):
    root, manifest = dataset
    outputs = []
    for batch_rows in (1, 1000):
        folder = tmp_path / str(batch_rows)
        publish_manifest(
            manifest,
            root,
            folder / "m.parquet",
            {},
            folder / "r.json",
            rejects_path=folder / "rejects.parquet",
            batch_rows=batch_rows,
        )
        outputs.append(
            (
                pq.read_table(folder / "m.parquet"),
                pq.read_table(folder / "rejects.parquet"),
                (folder / "r.json").read_text(),
            )
        )
    (manifest_a, rejects_a, report_a), (manifest_b, rejects_b, report_b) = outputs
    assert manifest_a.equals(manifest_b)
    assert rejects_a.equals(rejects_b)
    assert report_a == report_b


def test_alignment_and_embedding_account_for_every_manifest_row(dataset, tmp_path):
    """Alignment must cope with bad bytes on its own: its manifest may not come from ingest."""
    root, frame = dataset
    frame = frame[~frame["source_path"].isin(["missing.png", "a_directory.png"])]
    frame = frame.drop_duplicates("image_id")
    frame = frame.assign(image=[(root / path).read_bytes() for path in frame["source_path"]])
    manifest = write_parquet(frame, tmp_path / "manifest.parquet", MANIFEST)

    aligned, embedded = [], []
    for shard in range(2):
        aligned_path = tmp_path / f"aligned-{shard}.parquet"
        counts = align_shard(manifest, aligned_path, shard=shard, shards=2, alignment=ALIGNMENT)
        table = pq.read_table(aligned_path).to_pandas()
        assert counts == table["status"].value_counts().to_dict()
        aligned.append(table)
        embeddings_path = tmp_path / f"embeddings-{shard}.parquet"
        done = embed_shard(
            aligned_path,
            embeddings_path,
            weights="random",
            weights_path=None,
            batch_size=3,
            workers=0,
            seed=0,
            device="cpu",
            precision="auto",
        )
        embedded.append(pq.read_table(embeddings_path).to_pandas())
        assert done == len(embedded[-1])
    aligned = pd.concat(aligned, ignore_index=True)
    embedded = pd.concat(embedded, ignore_index=True)

    assert sorted(aligned["image_id"]) == sorted(frame["image_id"])
    statuses = aligned.set_index("image_id")["status"]
    unusable = {name.rsplit(".", 1)[0] for name in bad_images()} | {"huge"}
    assert set(statuses[statuses == "rejected"].index) == unusable
    reasons = aligned.set_index("image_id")["reject_reason"]
    assert reasons["huge"].startswith("image too large")
    assert all(reasons[i].startswith("undecodable image") for i in unusable - {"huge"})
    # Every valid format yields a crop (a face or, for these faceless images, the whole frame).
    assert set(statuses[statuses != "rejected"].index) == {
        name.rsplit(".", 1)[0] for name in good_images()
    }
    assert aligned.loc[aligned["status"] != "rejected", "crop"].notna().all()

    kept = aligned[aligned["status"] != "rejected"]
    assert embedded["image_id"].tolist() == kept["image_id"].tolist()
    assert (embedded["alignment_status"].to_numpy() == kept["status"].to_numpy()).all()
    assert np.isfinite(np.stack(embedded["embedding"])).all()


def test_alignment_and_embedding_give_the_same_bytes_twice(dataset, tmp_path):
    root, frame = dataset
    frame = frame[frame["source_path"].isin(list(good_images()))]
    frame = frame.assign(image=[(root / path).read_bytes() for path in frame["source_path"]])
    manifest = write_parquet(frame, tmp_path / "manifest.parquet", MANIFEST)
    outputs = []
    for attempt in range(2):
        aligned = tmp_path / f"aligned-{attempt}.parquet"
        embeddings = tmp_path / f"embeddings-{attempt}.parquet"
        align_shard(manifest, aligned, shard=0, shards=1, alignment=ALIGNMENT)
        embed_shard(
            aligned,
            embeddings,
            weights="random",
            weights_path=None,
            batch_size=2,
            workers=0,
            seed=3,
            device="cpu",
            precision="auto",
        )
        outputs.append((aligned.read_bytes(), embeddings.read_bytes()))
    assert outputs[0] == outputs[1]
