"""FairFace rendered the way the emotion dataset's images look, before alignment.

The demographic classifiers are fitted on FairFace (224 px colour photographs with a 25%
margin) but label the emotion dataset's faces, which may be 48x48 grayscale tight crops (FER+)
or 100x100 aligned colour crops (RAF-DB). Their accuracy on clean FairFace says little about
their accuracy there. :func:`render_image` turns a FairFace photograph into an image of the
target dataset's kind (a centred square crop of a given tightness, grayscale or colour, at the
dataset's resolution, stored losslessly as PNG); the rendered copy then goes through the same
alignment and embedding rules as the emotion dataset, so the classifiers can be measured (and
fitted) in the domain where their labels are used.

The crop fractions assume FairFace's margin-0.25 release, whose face box spans about two
thirds of the frame; :data:`DOMAIN_RENDERS` documents each dataset's look.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
from PIL import Image

from fairfer.images import decode_image

#: Dataset name of the rendered FairFace copy in manifests, aligned crops and embeddings.
DOMAIN_DATASET = "fairface_domain"


@dataclass(frozen=True)
class DomainRender:
    """How to render a FairFace photograph like an emotion dataset's image.

    Attributes
    ----------
    size : int
        Side of the square output in pixels (48 for FER+).
    grayscale : bool
        Whether the output is single-channel 8-bit grayscale.
    crop_fraction : float
        Side of the centred square crop relative to the source's shorter side, in (0, 1]:
        1.0 keeps the whole frame, about 0.67 cuts a margin-0.25 FairFace image to its face box.
    """

    size: int
    grayscale: bool
    crop_fraction: float

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"render size must be at least 8 pixels, got {self.size}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def domain_render(settings: Mapping[str, object]) -> DomainRender:
    """A :class:`DomainRender` from its config block (``race_matching.domain_render.<dataset>``)."""
    return DomainRender(
        size=int(settings["size"]),
        grayscale=bool(settings["grayscale"]),
        crop_fraction=float(settings["crop_fraction"]),
    )


def render_image(data: bytes, render: DomainRender) -> bytes:
    """Render one encoded image as ``render`` describes; returns PNG bytes.

    The crop is centred and square, so non-square sources lose their longer side's ends as a
    dataset's square crops would. Downsampling uses Pillow's antialiased Lanczos filter, as
    image-processing tools that produced FER2013 and RAF-DB's crops would.
    """
    image = decode_image(data)
    image = image.convert("L" if render.grayscale else "RGB")
    width, height = image.size
    side = max(1, round(min(width, height) * render.crop_fraction))
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((render.size, render.size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_batches(
    batches: Iterable[pa.RecordBatch],
    render: DomainRender,
    *,
    splits: Sequence[str],
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """Manifest record batches of the rendered copy: rows of ``splits`` only, same image ids,
    dataset :data:`DOMAIN_DATASET`, images replaced by their rendering."""
    wanted = set(splits)
    for batch in batches:
        rows = batch.to_pylist()
        rendered = []
        for row in rows:
            if row["split"] not in wanted:
                continue
            row["dataset"] = DOMAIN_DATASET
            row["image"] = render_image(row["image"], render)
            rendered.append(row)
        if rendered:
            yield pa.RecordBatch.from_pylist(rendered, schema=schema)
