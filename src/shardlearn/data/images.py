"""Image datasets: a folder of images (one sub-folder per class) or arrays, into shards.

Images are stored in the ordinary dataset format (:func:`shardlearn.data.write_dataset`), one
``uint8`` column per pixel named ``px_{channel}_{row}_{col}`` in channel-major (C, H, W)
order, plus the label column. Parquet compresses such columns well, every reader of the
library understands them (they are plain numeric columns, so an MLP or a preprocessor can use
them too), and the image shape is recovered from the column names alone by
:func:`image_info`. Pixel values are 0..255; a ConvNet trained on an image dataset scales them
to [0, 1] itself. Per-pixel columns suit small images (up to roughly 64 x 64 x 3); larger
images need a binary or list column, which the dataset format does not store yet.

>>> import numpy as np
>>> from shardlearn.data.images import ingest_images, image_info
>>> images = np.zeros((20, 8, 8), dtype=np.uint8); labels = np.arange(20) % 2
>>> ds = ingest_images((images, labels), "data/images")
>>> image_info(ds)["shape"]
[1, 8, 8]
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardlearn.exceptions import DataError

__all__ = ["PIXEL_PREFIX", "image_info", "ingest_images", "pixel_columns"]

PIXEL_PREFIX = "px"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_PIXEL_NAME = re.compile(rf"{PIXEL_PREFIX}_(\d+)_(\d+)_(\d+)")  # fullmatch: "$" allows "\n"


def pixel_columns(shape: Sequence[int]) -> list[str]:
    """Column names of an image of ``shape`` (C, H, W), in storage order."""
    channels, height, width = shape
    digits = len(str(max(height, width) - 1))
    return [
        f"{PIXEL_PREFIX}_{c}_{y:0{digits}d}_{x:0{digits}d}"
        for c in range(channels)
        for y in range(height)
        for x in range(width)
    ]


def image_info(dataset: Any) -> dict | None:
    """``{"shape": [C, H, W], "columns": [...]}`` of an image dataset, or None for tabular data.

    A dataset is an image dataset when its feature columns are exactly the pixel columns of
    one shape, in order.
    """
    names = [column.name for column in dataset.schema.feature_columns]
    matches = [m for m in map(_PIXEL_NAME.fullmatch, names) if m is not None]
    if not names or len(matches) != len(names):
        return None
    shape = [max(int(m.group(i)) for m in matches) + 1 for m in matches[:1] for i in (1, 2, 3)]
    if names != pixel_columns(shape):
        return None
    return {"shape": shape, "columns": names}


def _as_uint8(images: np.ndarray, max_value: float | None) -> np.ndarray:
    """Scale to 0..255 uint8 (``max_value`` is the input's white; None: keep 0..255 values)."""
    if max_value is None:
        if images.dtype == np.uint8:
            return images
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                "Image values must lie in 0..255; pass max_value (e.g. 1.0 for images in "
                "[0, 1], 16 for scikit-learn's digits) to rescale them."
            )
        return np.rint(images).astype(np.uint8)
    if max_value <= 0:
        raise DataError(f"max_value must be > 0. Got {max_value}.")
    scaled = np.asarray(images, dtype=np.float64) * (255.0 / max_value)
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _to_chw(images: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, H, W, C) with C in 1, 3, 4 -> (n, C, H, W)."""
    if images.ndim == 3:
        return images[:, None, :, :]
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        return np.moveaxis(images, -1, 1)
    raise DataError(
        f"Image arrays must have shape (n, H, W) or (n, H, W, C) with C in 1, 3, 4; "
        f"got {images.shape}."
    )


def _read_folder(folder: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """All images under ``folder/<class>/``, as (n, H, W, C) uint8 and their class names."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{str(folder)!r} has no class sub-folders; expected one folder per class, e.g. "
            f"{folder}/cat/001.png and {folder}/dog/002.png."
        )
    pixels, labels, first = [], [], None
    for name in classes:
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            with Image.open(path) as opened:
                mode = "L" if opened.mode in ("1", "L", "I", "I;16") else "RGB"
                image = opened.convert(mode)
                if size is not None:
                    image = image.resize((size[1], size[0]))
                array = np.asarray(image, dtype=np.uint8)
            array = array[:, :, None] if array.ndim == 2 else array
            first = array.shape if first is None else first
            if array.shape != first:
                raise DataError(
                    f"Image {str(path)!r} is {array.shape[1]}x{array.shape[0]} with "
                    f"{array.shape[2]} channel(s) but earlier ones are {first[1]}x{first[0]} "
                    f"with {first[2]}; pass size=(H, W) to resize them all."
                )
            pixels.append(array)
            labels.append(name)
    if not pixels:
        raise DataError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) found under {folder}.")
    return np.stack(pixels), np.asarray(labels)


def ingest_images(
    source: str | os.PathLike[str] | tuple[np.ndarray, Sequence[Any]],
    out: str | os.PathLike[str],
    *,
    label: str = "label",
    size: tuple[int, int] | None = None,
    max_value: float | None = None,
    partitions: int = 4,
    split: Sequence[float] | str = (0.8, 0.1, 0.1),
    strategy: str = "stratified",
    seed: int = 0,
    overwrite: bool = False,
) -> Any:
    """Write images as a sharded dataset (one uint8 column per pixel, plus the label).

    Parameters
    ----------
    source : path or (images, labels)
        A folder with one sub-folder of images per class (the folder name is the label), or
        arrays: images of shape (n, H, W) or (n, H, W, C) and one label per image.
    out : str or path
        Dataset directory (local path or ``pyarrow.fs`` URI).
    label : str, default "label"
        Name of the label column.
    size : (H, W), optional
        Resize every image of a folder to this size; without it they must all match.
    max_value : float, optional
        The value of white in array input (e.g. 16 for scikit-learn's digits, 1.0 for [0, 1]
        floats); values are rescaled to 0..255. Without it arrays must hold 0..255.
    partitions, split, strategy, seed, overwrite
        As in :func:`shardlearn.data.write_dataset` (stratified by default).

    Returns
    -------
    Dataset
        Its shape is given by :func:`image_info`.
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise DataError("Array input to ingest_images must be a tuple (images, labels).")
        images, labels = np.asarray(source[0]), np.asarray(source[1])
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels.")
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"Image folder {str(folder)!r} does not exist or is not a folder.")
        images, labels = _read_folder(folder, size)
    chw = _to_chw(_as_uint8(images, max_value))
    names = pixel_columns(chw.shape[1:])
    flat = np.ascontiguousarray(chw.reshape(chw.shape[0], -1))
    columns = {name: pa.array(flat[:, j]) for j, name in enumerate(names)}
    if label in columns:
        raise DataError(f"The label column {label!r} collides with a pixel column name.")
    columns[label] = pa.array(labels.tolist())
    from shardlearn.data import write_dataset

    return write_dataset(
        pa.table(columns),
        out,
        label=label,
        partitions=partitions,
        split=split,
        strategy=strategy,
        seed=seed,
        overwrite=overwrite,
    )
