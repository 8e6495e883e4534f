"""Demographic augmentation: oversample under-represented (race x emotion) cells.

The plan (which image is copied how often) and the pixels (what each copy looks like) are
separate steps. Every augmented row of a plan carries its own ``augmentation_seed``, so any copy
can be regenerated on its own, in any order or shard, from the plan row and the source bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from fairfer.images import to_rgb

logger = logging.getLogger(__name__)

#: Image modes whose bands are all 8-bit intensities, so the photometric jitter is meaningful.
SUPPORTED_MODES: tuple[str, ...] = ("L", "LA", "RGB", "RGBA")
#: Keys of the dict :func:`augment_image` returns, in the order the steps are applied.
APPLIED_KEYS: tuple[str, ...] = (
    "flipped",
    "rotation_deg",
    "brightness",
    "contrast",
    "blur_radius",
    "noise_std",
)
#: Plan columns besides the cell columns, in output order.
PLAN_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "source_image_id",
    "is_augmented",
    "augmentation_seed",
)
# ITU-R 601 luma weights, as Pillow's "L" conversion, so contrast pivots on perceived mean grey.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class AugmentationParams:
    """Ranges of the random transformations applied by :func:`augment_image`.

    Parameters
    ----------
    flip_probability : float
        Probability of a horizontal (left-right) flip.
    max_rotation_deg : float
        Rotation angle is drawn uniformly from ``[-max_rotation_deg, max_rotation_deg]``.
    brightness_jitter : float
        Brightness factor is drawn uniformly from ``[1 - jitter, 1 + jitter]``; must be < 1.
    contrast_jitter : float
        Contrast factor is drawn uniformly from ``[1 - jitter, 1 + jitter]``; must be < 1.
    blur_probability : float
        Probability of a Gaussian blur.
    max_blur_radius : float
        Blur radius (Pillow's Gaussian standard deviation, in pixels) is drawn uniformly from
        ``[0, max_blur_radius]`` when a blur is applied.
    noise_probability : float
        Probability of additive Gaussian pixel noise.
    max_noise_std : float
        Noise standard deviation, in 0..255 intensity units, is drawn uniformly from
        ``[0, max_noise_std]`` when noise is applied.
    """

    flip_probability: float = 0.5
    max_rotation_deg: float = 10.0
    brightness_jitter: float = 0.2
    contrast_jitter: float = 0.2
    blur_probability: float = 0.3
    max_blur_radius: float = 1.0
    noise_probability: float = 0.3
    max_noise_std: float = 6.0

    def __post_init__(self) -> None:
        for name in ("flip_probability", "blur_probability", "noise_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentationParams.{name}={value!r}: must be in [0, 1].")
        for name in ("max_rotation_deg", "max_blur_radius", "max_noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"AugmentationParams.{name}={value!r}: must be finite and >= 0.")
        for name in ("brightness_jitter", "contrast_jitter"):
            value = getattr(self, name)
            # A factor of 0 or below would black out (or invert) the image.
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AugmentationParams.{name}={value!r}: must be in [0, 1).")


def augment_image(
    image: Image.Image, rng: np.random.Generator, params: AugmentationParams
) -> tuple[Image.Image, dict[str, float | bool]]:
    """Apply one random flip, rotation, brightness/contrast, blur and noise to an image.

    Parameters
    ----------
    image : PIL.Image.Image
        Input image in one of :data:`SUPPORTED_MODES`; any size. An alpha band is only moved by
        the geometric steps (flip, rotation), never jittered or noised.
    rng : numpy.random.Generator
        Source of randomness; the result depends only on its state, the image and ``params``.
    params : AugmentationParams
        Ranges of the transformations.

    Returns
    -------
    augmented : PIL.Image.Image
        New image with the input's mode and size.
    applied : dict
        Exactly what was applied, keyed by :data:`APPLIED_KEYS`: ``flipped`` (bool),
        ``rotation_deg``, ``brightness``, ``contrast`` (factors, 1.0 = unchanged),
        ``blur_radius`` and ``noise_std`` (0.0 when not applied).

    Raises
    ------
    ValueError
        If the image mode is not supported.
    """
    if image.mode not in SUPPORTED_MODES:
        raise ValueError(
            f"augment_image: image mode {image.mode!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_MODES)}); convert it first, e.g. image.convert('RGB')."
        )
    # Every random number is drawn up front, whether or not its step fires, so the stream
    # consumed (and hence every other draw) does not depend on the coin flips.
    flipped = bool(rng.random() < params.flip_probability)
    rotation_deg = float(rng.uniform(-params.max_rotation_deg, params.max_rotation_deg))
    brightness = float(rng.uniform(1.0 - params.brightness_jitter, 1.0 + params.brightness_jitter))
    contrast = float(rng.uniform(1.0 - params.contrast_jitter, 1.0 + params.contrast_jitter))
    blurred = bool(rng.random() < params.blur_probability)
    blur_draw = float(rng.uniform(0.0, params.max_blur_radius))
    noised = bool(rng.random() < params.noise_probability)
    noise_draw = float(rng.uniform(0.0, params.max_noise_std))
    blur_radius = blur_draw if blurred else 0.0
    noise_std = noise_draw if noised else 0.0

    # Working band by band (each an 8-bit "L" image) makes every step mode-agnostic.
    band_names = image.getbands()
    bands = list(image.split())
    if flipped:
        bands = [band.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for band in bands]
    if rotation_deg != 0.0:
        bands = [_rotate_reflect(band, rotation_deg) for band in bands]

    color_idx = [i for i, name in enumerate(band_names) if name != "A"]
    color = np.stack([np.asarray(bands[i], dtype=np.float64) for i in color_idx], axis=-1)
    color = _adjust_brightness_contrast(color, brightness=brightness, contrast=contrast)
    if blur_radius > 0.0:
        blur = ImageFilter.GaussianBlur(blur_radius)
        color = np.stack(
            [
                np.asarray(Image.fromarray(_to_uint8(color[..., c])).filter(blur), np.float64)
                for c in range(color.shape[-1])
            ],
            axis=-1,
        )
    if noise_std > 0.0:
        color = color + rng.normal(0.0, noise_std, size=color.shape)
    color_u8 = _to_uint8(color)
    for c, i in enumerate(color_idx):
        bands[i] = Image.fromarray(np.ascontiguousarray(color_u8[..., c]))

    applied: dict[str, float | bool] = {
        "flipped": flipped,
        "rotation_deg": rotation_deg,
        "brightness": brightness,
        "contrast": contrast,
        "blur_radius": blur_radius,
        "noise_std": noise_std,
    }
    return Image.merge(image.mode, bands), applied


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _adjust_brightness_contrast(
    color: np.ndarray, *, brightness: float, contrast: float
) -> np.ndarray:
    # Clip between the two steps, as chained 8-bit enhancers would, so a brightened pixel that
    # saturates stays saturated rather than coming back under contrast < 1.
    bright = np.clip(color * brightness, 0.0, 255.0)
    if bright.shape[-1] == len(_LUMA):
        mean = float((bright @ _LUMA).mean())
    else:
        mean = float(bright.mean())
    return np.clip(mean + contrast * (bright - mean), 0.0, 255.0)


def _rotate_reflect(band: Image.Image, angle_deg: float) -> Image.Image:
    """Rotate an "L" band about its centre, filling uncovered corners by mirror reflection."""
    width, height = band.size
    theta = math.radians(angle_deg)
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    # Half the growth of the rotated frame's bounding box, plus one pixel so bilinear sampling
    # at the crop border never reaches the (black) outside of the padded image.
    pad = (
        math.ceil(max(width * cos + height * sin - width, width * sin + height * cos - height) / 2)
        + 1
    )
    padded = np.pad(np.asarray(band), pad, mode="symmetric")
    rotated = Image.fromarray(padded).rotate(angle_deg, resample=Image.Resampling.BILINEAR)
    return rotated.crop((pad, pad, pad + width, pad + height))


def balanced_oversampling_plan(
    cells: pd.DataFrame,
    *,
    cell_columns: Sequence[str],
    target: str | int = "max",
    seed: int,
    max_copies_per_image: int | None = None,
) -> pd.DataFrame:
    """Plan augmented copies so that every non-empty cell reaches a common size.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per original image: a unique ``image_id`` column plus ``cell_columns``. Rows with
        a missing value in any cell column are kept as originals but not balanced (logged).
    cell_columns : sequence of str
        Columns whose value combination defines a cell, e.g. ``("race", "emotion")``.
    target : {"max", "median"} or int
        Rows per cell after oversampling: the largest cell's size, the median non-empty cell
        size (rounded up), or a fixed positive number. Cells already above the target are kept
        whole, never subsampled.
    seed : int
        Seeds which images are copied and every copy's ``augmentation_seed``.
    max_copies_per_image : int or None
        At most this many augmented copies of any one image; cells that would need more stay
        below the target (logged). ``None`` means no cap.

    Returns
    -------
    pandas.DataFrame
        Columns ``sample_id`` (unique), ``source_image_id``, the cell columns, ``is_augmented``
        and ``augmentation_seed`` (nullable ``Int64``; ``<NA>`` for originals). Every original
        comes first, once, in input order, with ``sample_id == image_id``; then the copies,
        ``f"{image_id}#aug{k}"``, drawn uniformly with replacement within their cell.

    Raises
    ------
    ValueError
        On missing columns, duplicate image ids, a bad ``target`` or ``max_copies_per_image``.
    """
    cell_columns = list(cell_columns)
    _check_plan_inputs(cells, cell_columns, max_copies_per_image)
    # Positional index: group members' labels are then their row positions.
    cells = cells.reset_index(drop=True)
    image_ids = cells["image_id"].astype(str)

    complete = cells[cell_columns].notna().all(axis=1)
    if not complete.all():
        logger.warning(
            "%d of %d images have a missing %s value; they are kept as originals but not "
            "balanced or copied.",
            int((~complete).sum()),
            len(cells),
            "/".join(cell_columns),
        )
    groups = {
        key if isinstance(key, tuple) else (key,): frame.index.to_numpy()
        for key, frame in cells[complete].groupby(cell_columns, sort=True, observed=True)
    }
    _log_empty_cells(cells[complete], cell_columns, set(groups))
    if not groups:
        logger.warning("No complete cells to balance; the plan holds the originals only.")
        return _plan_frame(image_ids, cells, cell_columns, copies=[])

    sizes = {key: len(index) for key, index in groups.items()}
    target_size = _resolve_target(target, list(sizes.values()))
    logger.info(
        "Balancing %d cells over %s to %d rows each (sizes %d..%d).",
        len(sizes),
        "/".join(cell_columns),
        target_size,
        min(sizes.values()),
        max(sizes.values()),
    )

    copies: list[tuple[int, int]] = []  # (row position in `cells`, copy number of that image)
    copies_so_far: dict[int, int] = {}
    capped: list[str] = []
    for key, positions in groups.items():
        needed = target_size - len(positions)
        if needed <= 0:
            continue
        # One generator per cell, keyed by the cell's values, so adding or removing other cells
        # does not change which images this cell copies.
        rng = np.random.default_rng(_stable_int(seed, "cell", *map(str, key)))
        if max_copies_per_image is None:
            drawn = positions[rng.integers(0, len(positions), size=needed)]
        else:
            capacity = len(positions) * max_copies_per_image
            if needed > capacity:
                capped.append(
                    f"{dict(zip(cell_columns, key, strict=True))}: {len(positions) + capacity} rows"
                )
            # An urn holding each image `cap` times: every image is equally likely on average,
            # and none can be drawn more than `cap` times.
            urn = rng.choice(capacity, size=min(needed, capacity), replace=False)
            drawn = positions[urn // max_copies_per_image]
        for position in drawn.tolist():
            k = copies_so_far.get(position, 0)
            copies_so_far[position] = k + 1
            copies.append((position, k))
    if capped:
        logger.warning(
            "%d cell(s) stay below the target %d because of max_copies_per_image=%d: %s",
            len(capped),
            target_size,
            max_copies_per_image,
            "; ".join(capped),
        )
    logger.info(
        "Planned %d augmented copies of %d distinct images (%d rows in all).",
        len(copies),
        len(copies_so_far),
        len(cells) + len(copies),
    )
    return _plan_frame(image_ids, cells, cell_columns, copies=copies, seed=seed)


def _check_plan_inputs(
    cells: pd.DataFrame, cell_columns: list[str], max_copies_per_image: int | None
) -> None:
    if not cell_columns:
        raise ValueError("balanced_oversampling_plan: cell_columns is empty; name at least one.")
    missing = [c for c in ["image_id", *cell_columns] if c not in cells.columns]
    if missing:
        raise ValueError(
            f"balanced_oversampling_plan: cells lacks column(s) {missing}; it has "
            f"{list(cells.columns)}."
        )
    reserved = [c for c in cell_columns if c in PLAN_COLUMNS or c == "image_id"]
    if reserved:
        raise ValueError(
            f"balanced_oversampling_plan: cell column(s) {reserved} clash with plan columns "
            f"{list(PLAN_COLUMNS)}; rename them."
        )
    duplicated = cells["image_id"].astype(str).duplicated()
    if duplicated.any():
        examples = cells.loc[duplicated, "image_id"].astype(str).unique()[:5].tolist()
        raise ValueError(
            f"balanced_oversampling_plan: image_id must be unique; {int(duplicated.sum())} "
            f"duplicate(s), e.g. {examples}. Deduplicate the cells table first."
        )
    if max_copies_per_image is not None and (
        isinstance(max_copies_per_image, bool)
        or not isinstance(max_copies_per_image, int | np.integer)
        or max_copies_per_image < 1
    ):
        raise ValueError(
            f"balanced_oversampling_plan: max_copies_per_image={max_copies_per_image!r}; "
            "use a positive int, or None for no cap."
        )


def _resolve_target(target: str | int, sizes: list[int]) -> int:
    if isinstance(target, str):
        if target == "max":
            return max(sizes)
        if target == "median":
            return math.ceil(float(np.median(sizes)))
    elif isinstance(target, int | np.integer) and not isinstance(target, bool) and target >= 1:
        return int(target)
    raise ValueError(
        f"balanced_oversampling_plan: target={target!r}; use 'max', 'median' or a positive int."
    )


def _log_empty_cells(
    cells: pd.DataFrame, cell_columns: list[str], present: set[tuple[object, ...]]
) -> None:
    levels = []
    for column in cell_columns:
        values = cells[column]
        # Unused categories of a categorical column are empty cells too.
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels.append(list(values.cat.categories))
        else:
            levels.append(sorted(values.unique().tolist(), key=str))
    empty = [key for key in product(*levels) if key not in present]
    if empty:
        logger.warning(
            "%d empty %s cell(s) stay empty (nothing to copy from): %s",
            len(empty),
            "/".join(cell_columns),
            ", ".join(str(dict(zip(cell_columns, key, strict=True))) for key in empty),
        )


def _stable_int(seed: int, *parts: str) -> int:
    """A 63-bit integer from the seed and text, stable across processes and Python versions."""
    digest = hashlib.blake2b("\x1f".join([str(int(seed)), *parts]).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def _plan_frame(
    image_ids: pd.Series,
    cells: pd.DataFrame,
    cell_columns: list[str],
    *,
    copies: list[tuple[int, int]],
    seed: int = 0,
) -> pd.DataFrame:
    positions = np.array([position for position, _ in copies], dtype=np.intp)
    copy_ids = image_ids.to_numpy()[positions]
    sample_ids = [f"{image_id}#aug{k}" for image_id, (_, k) in zip(copy_ids, copies, strict=True)]
    originals = pd.DataFrame(
        {
            "sample_id": image_ids.to_numpy(),
            "source_image_id": image_ids.to_numpy(),
            **{c: cells[c].to_numpy() for c in cell_columns},
            "is_augmented": False,
            "augmentation_seed": pd.array([pd.NA] * len(cells), dtype="Int64"),
        }
    )
    augmented = pd.DataFrame(
        {
            "sample_id": sample_ids,
            "source_image_id": copy_ids,
            **{c: cells[c].to_numpy()[positions] for c in cell_columns},
            "is_augmented": True,
            "augmentation_seed": pd.array(
                [_stable_int(seed, "copy", sample_id) for sample_id in sample_ids], dtype="Int64"
            ),
        }
    )
    plan = pd.concat([originals, augmented], ignore_index=True) if copies else originals
    for column in cell_columns:
        # Building from numpy arrays turns e.g. categoricals into object; restore the dtypes.
        plan[column] = plan[column].astype(cells[column].dtype)
    plan["is_augmented"] = plan["is_augmented"].astype(bool)
    clashes = plan["sample_id"].duplicated()
    if clashes.any():
        raise ValueError(
            "balanced_oversampling_plan: generated sample ids clash with original image ids, "
            f"e.g. {plan.loc[clashes, 'sample_id'].head(5).tolist()}; image ids must not look "
            "like '<id>#aug<k>'."
        )
    return plan[
        ["sample_id", "source_image_id", *cell_columns, "is_augmented", "augmentation_seed"]
    ]


def apply_plan(
    plan: pd.DataFrame, images: Mapping[str, bytes], params: AugmentationParams
) -> Iterator[tuple[str, bytes, dict[str, float | bool]]]:
    """Materialise a plan: yield every sample's encoded image and what was done to it.

    Parameters
    ----------
    plan : pandas.DataFrame
        Output of :func:`balanced_oversampling_plan` (any subset or order of its rows).
    images : mapping of str to bytes
        Encoded source image (any format Pillow reads) for each ``source_image_id``.
    params : AugmentationParams
        Ranges of the transformations.

    Yields
    ------
    sample_id : str
        The plan row's ``sample_id``, in plan order.
    data : bytes
        Originals: the source bytes, unchanged. Augmented rows: a PNG of the augmented image,
        which depends only on the source, ``augmentation_seed`` and ``params``, so shards and
        reorderings of a plan reproduce the same copies.
    applied : dict
        ``{}`` for originals; for augmented rows the dict from :func:`augment_image`.

    Raises
    ------
    ValueError
        If the plan lacks a column, or a source image is missing from ``images``.
    """
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise ValueError(
            f"apply_plan: plan lacks column(s) {missing}; build it with balanced_oversampling_plan."
        )
    rows = plan[list(PLAN_COLUMNS)].itertuples(index=False, name=None)
    for sample_id, source_id, is_augmented, augmentation_seed in rows:
        try:
            data = images[source_id]
        except KeyError:
            raise ValueError(
                f"apply_plan: no image bytes for source_image_id {source_id!r} (sample "
                f"{sample_id!r}); pass every source image of the plan in `images`."
            ) from None
        if not is_augmented:
            yield sample_id, data, {}
            continue
        with Image.open(io.BytesIO(data)) as source:
            source.load()
            if source.mode not in SUPPORTED_MODES:
                # 16-bit, palette, CMYK ...: the jitter needs 8-bit bands.
                source = to_rgb(source)
            augmented, applied = augment_image(
                source, np.random.default_rng(int(augmentation_seed)), params
            )
        buffer = io.BytesIO()
        augmented.save(buffer, format="PNG")
        yield sample_id, buffer.getvalue(), applied


def cell_counts(plan: pd.DataFrame, *, cell_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Count rows per cell before and after oversampling, for reporting.

    Parameters
    ----------
    plan : pandas.DataFrame
        Output of :func:`balanced_oversampling_plan`.
    cell_columns : sequence of str, optional
        Cell columns; by default every plan column that is not one of :data:`PLAN_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        One row per cell, sorted by cell: the cell columns, ``n_before`` (originals),
        ``n_augmented`` (copies) and ``n_after`` (their sum). Originals with a missing cell
        value are not counted.
    """
    if cell_columns is None:
        cell_columns = [c for c in plan.columns if c not in PLAN_COLUMNS]
    cell_columns = list(cell_columns)
    missing = [c for c in [*cell_columns, "is_augmented"] if c not in plan.columns]
    if missing or not cell_columns:
        raise ValueError(
            f"cell_counts: plan lacks column(s) {missing or 'to group by'}; it has "
            f"{list(plan.columns)}."
        )
    counts = (
        plan.assign(n_before=~plan["is_augmented"].astype(bool), n_augmented=plan["is_augmented"])
        .groupby(cell_columns, sort=True, observed=True)[["n_before", "n_augmented"]]
        .sum()
        .astype(int)
        .reset_index()
    )
    counts["n_after"] = counts["n_before"] + counts["n_augmented"]
    return counts
