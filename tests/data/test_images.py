"""Image ingest: folders of images and arrays become pixel-column datasets."""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.data import Dataset
from shardlearn.data.images import image_info, ingest_images, pixel_columns
from shardlearn.exceptions import DataError


def _read_all(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every split's pixel rows and labels."""
    tables = [ds.read(split) for split in ds.splits]
    pixels = np.concatenate(
        [
            np.column_stack([t.column(c).to_numpy() for c in image_info(ds)["columns"]])
            for t in tables
        ]
    )
    labels = np.concatenate([t.column(ds.label).to_numpy(zero_copy_only=False) for t in tables])
    return pixels, labels


def test_array_images_round_trip_through_pixel_columns(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 5, 7, 3), dtype=np.uint8)
    labels = np.repeat(["cat", "dog", "eel"], 10)
    ds = ingest_images((images, labels), tmp_path / "ds", partitions=2, seed=1)

    info = image_info(Dataset.open(tmp_path / "ds"))
    assert info["shape"] == [3, 5, 7]
    assert ds.classes == ["cat", "dog", "eel"]
    assert ds.num_rows() == 30
    pixels, stored_labels = _read_all(ds)
    expected = np.moveaxis(images, -1, 1).reshape(30, -1)
    # Every image is stored exactly once, channel-major, with its own label.
    stored = {(row.tobytes(), lab) for row, lab in zip(pixels, stored_labels, strict=True)}
    assert stored == {(row.tobytes(), lab) for row, lab in zip(expected, labels, strict=True)}


def test_max_value_rescales_to_full_range(tmp_path):
    images = np.array([[[0, 8], [16, 4]]] * 4, dtype=np.float64)  # digits-style 0..16
    ds = ingest_images(
        (images, [0, 1, 0, 1]), tmp_path / "ds", max_value=16, split=(1, 0, 0), partitions=1
    )
    pixels, _ = _read_all(ds)
    assert sorted(set(pixels.ravel().tolist())) == [0, 64, 128, 255]


def test_folder_of_class_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (6, 4), dtype=np.uint8)).save(
                tmp_path / "img" / name / f"{i}.png"
            )
    ds = ingest_images(tmp_path / "img", tmp_path / "ds", partitions=2, split=(1, 0, 0))
    assert ds.classes == ["circle", "square"]
    assert image_info(ds)["shape"] == [1, 6, 4]
    assert ds.num_rows() == 12


def test_folder_with_mixed_sizes_needs_size(tmp_path):
    from PIL import Image

    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "b").mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp_path / "img" / "a" / "0.png")
    Image.new("L", (5, 4)).save(tmp_path / "img" / "b" / "1.png")
    with pytest.raises(DataError, match="size=\\(H, W\\)"):
        ingest_images(tmp_path / "img", tmp_path / "ds")
    ds = ingest_images(
        tmp_path / "img",
        tmp_path / "ds2",
        size=(3, 3),
        split=(1, 0, 0),
        partitions=1,
        strategy="random",
    )
    assert image_info(ds)["shape"] == [1, 3, 3]


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest_images(tmp_path / "missing", tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ingest_images(tmp_path / "empty", tmp_path / "ds")
    with pytest.raises(DataError, match="0..255"):
        ingest_images((np.full((4, 2, 2), 300.0), [0, 1, 0, 1]), tmp_path / "ds")
    with pytest.raises(DataError, match="shape"):
        ingest_images((np.zeros((4, 2)), [0, 1, 0, 1]), tmp_path / "ds")
    with pytest.raises(DataError, match="4 images but 3 labels"):
        ingest_images((np.zeros((4, 2, 2)), [0, 1, 0]), tmp_path / "ds")


def test_tabular_dataset_is_not_an_image_dataset(tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset

    ds = write_dataset(
        pa.table({"a": [1.0, 2.0], "y": [0, 1]}), tmp_path / "t", label="y", partitions=1
    )
    assert image_info(ds) is None
    assert pixel_columns([1, 2, 2]) == ["px_0_0_0", "px_0_0_1", "px_0_1_0", "px_0_1_1"]
