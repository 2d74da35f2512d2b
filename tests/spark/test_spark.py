"""``gre spark``: a real Spark ``local[2]`` job (PySpark, its JVM, ``binaryFile``, the
``predict_batch_udf`` workers) on ../shared/images plus generated images, checked row for row
against ``gre classify --output FILE.parquet`` on the same files.

One job serves the module (starting Spark and its workers costs ~20 s); it runs
``gre spark`` in this process. Spark's SampleID is the file's URI (``file:/...``); it is
compared by its path. Without PySpark or Java the tests fail, saying how to get them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gre.cli import main
from gre.spark.command import spark
from gre.spark.needs import SparkUnavailable, require_spark
from gre.spark.predict import NO_ERROR, ConfigSource, make_predict_fn
from tests.support import shared

#: Blobs written per image: open_nsfw's pooled features and its probabilities.
FEATURES = "pool,prob"
TOP_K = 2
#: Small enough that the generated 1700x1200 photo is refused as too_large, so the
#: override is seen to reach the executors' configuration.
MAX_PIXELS = 2_000_000
#: What each generated bad file must be answered (file name -> error code).
EXPECTED_ERRORS = {
    "corrupt.jpg": "bad_image",
    "not-an-image.png": "bad_image",
    "really-a-tiff.png": "unsupported_format",
    "huge.jpg": "too_large",
}
ATOL = 1e-6


def _smooth_noise(seed: int, height: int, width: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), np.uint8)


def _gray(image: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


def _encode(suffix: str, image: np.ndarray[Any, np.dtype[np.uint8]]) -> bytes:
    ok, encoded = cv2.imencode(suffix, image)
    assert ok, suffix
    return encoded.tobytes()


def make_images(folder: Path) -> None:
    """The shared photos and generated files: JPEGs and PNGs of seeded noise (a gray one, a
    name with a space, one in a subfolder), a truncated JPEG, text and a TIFF named .png, a
    photo over :data:`MAX_PIXELS`, and a .txt file neither command takes."""
    (folder / "sub").mkdir(parents=True)
    for name in ("cat.jpg", "cat_gray.jpg", "fish-bike.jpg"):
        shutil.copy(shared(f"images/{name}"), folder / name)
    photo = (folder / "cat.jpg").read_bytes()
    files = {
        "noise.jpg": _encode(".jpg", _smooth_noise(1, 300, 400)),
        "noise.png": _encode(".png", _smooth_noise(2, 256, 256)),
        "gray.png": _encode(".png", _gray(_smooth_noise(3, 200, 320))),
        "with space.jpg": _encode(".jpg", _smooth_noise(4, 240, 240)),
        "sub/nested.JPG": _encode(".jpg", _smooth_noise(5, 480, 360)),
        "corrupt.jpg": photo[: len(photo) // 3],
        "not-an-image.png": b"this is a text file, not a PNG\n" * 10,
        "really-a-tiff.png": _encode(".tiff", _smooth_noise(7, 64, 64)),
        "huge.jpg": _encode(".jpg", _smooth_noise(6, 1200, 1700)),
        "notes.txt": b"neither gre classify nor gre spark takes this file\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.fixture(scope="module")
def spark_ready() -> str:
    """PySpark and Java, or the test fails saying how to install them."""
    try:
        return require_spark()
    except SparkUnavailable as exc:
        pytest.fail(f"gre spark needs PySpark and Java: {exc}")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spark") / "images"
    make_images(folder)
    return folder


def _rows(table: pa.Table) -> dict[str, dict[str, Any]]:
    rows = table.to_pylist()
    return {row["SampleID"]: row for row in rows}


@pytest.fixture(scope="module")
def spark_table(spark_ready: str, images: Path) -> pa.Table:
    """``gre spark`` on ``images`` (recursive), in this process, with Spark ``local[2]``."""
    output = images.parent / "spark-out"
    result = CliRunner().invoke(
        spark,
        [str(images), str(output), "--master", "local[2]", "--recursive",
         "--features", FEATURES, "--top-k", str(TOP_K), "--batch-size", "4",
         "--set", f"max_pixels={MAX_PIXELS}"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # 1: some rows have an error
    assert f"wrote {output}" in result.output
    return pq.read_table(output)


@pytest.fixture(scope="module")
def classify_table(images: Path) -> pa.Table:
    """``gre classify --output FILE.parquet`` on the same files and settings."""
    output = images.parent / "classify.parquet"
    result = CliRunner().invoke(
        main,
        ["classify", str(images), "--recursive", "--output", str(output),
         "--features", FEATURES, "--top-k", str(TOP_K), "--set", f"max_pixels={MAX_PIXELS}"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    return pq.read_table(output)


def test_sample_ids_are_file_uris_of_the_same_files(
    spark_table: pa.Table, classify_table: pa.Table, images: Path
) -> None:
    spark_ids = [str(sample_id) for sample_id in spark_table.column("SampleID").to_pylist()]
    assert all(sample_id.startswith("file:/") for sample_id in spark_ids)
    classify_ids = [str(sample_id) for sample_id in classify_table.column("SampleID").to_pylist()]
    assert sorted(urlparse(s).path for s in spark_ids) == sorted(classify_ids)
    assert str(images / "with space.jpg") in {urlparse(s).path for s in spark_ids}
    assert len(spark_ids) == 12  # 3 photos + 9 generated files (notes.txt is not taken)


def test_schema_is_gre_classify_parquet_schema(
    spark_table: pa.Table, classify_table: pa.Table
) -> None:
    assert spark_table.schema.equals(classify_table.schema, check_metadata=False), (
        f"{spark_table.schema}\n!=\n{classify_table.schema}"
    )


def test_rows_equal_gre_classify_rows(spark_table: pa.Table, classify_table: pa.Table) -> None:
    expected = {str(Path(k)): v for k, v in _rows(classify_table).items()}
    blobs = FEATURES.split(",")
    for uri, row in _rows(spark_table).items():
        want = expected[urlparse(uri).path]
        assert row["labels"] == want["labels"], uri
        np.testing.assert_allclose(row["confidences"], want["confidences"], rtol=0, atol=ATOL)
        assert (row["error"], row["message"]) == (want["error"], want["message"]), uri
        for blob in blobs:
            if want[blob] is None:
                assert row[blob] is None, (uri, blob)
            else:
                assert len(row[blob]) == len(want[blob])
                np.testing.assert_allclose(row[blob], want[blob], rtol=0, atol=ATOL)


def test_bad_files_are_error_rows_with_null_features(spark_table: pa.Table) -> None:
    by_name = {Path(urlparse(k).path).name: v for k, v in _rows(spark_table).items()}
    for name, code in EXPECTED_ERRORS.items():
        row = by_name[name]
        assert row["error"] == code, (name, row["message"])
        assert row["message"]
        assert row["labels"] == []
        assert row["confidences"] == []
        assert row["pool"] is None
        assert row["prob"] is None
    classified = [row for name, row in by_name.items() if name not in EXPECTED_ERRORS]
    assert len(classified) == 8
    for row in classified:
        assert row["error"] is None
        assert row["message"] is None
        assert set(row["labels"]) == {"sfw", "nsfw"}
        assert row["confidences"] == sorted(row["confidences"], reverse=True)
        assert len(row["pool"]) == 1024
        # top-k 2 of open_nsfw's 2 classes: the prob blob, sorted, is the confidences
        np.testing.assert_allclose(sorted(row["prob"], reverse=True), row["confidences"], atol=ATOL)


def test_unknown_blob_is_refused_before_the_job(spark_ready: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        spark, [str(tmp_path), str(tmp_path / "out"), "--features", "pool,fc7"]
    )
    assert result.exit_code == 2, result.output
    assert "not a blob of this net: fc7" in result.output
    assert "fc_nsfw" in result.output  # the valid names are listed
    assert not (tmp_path / "out").exists()


def test_missing_java_says_how_to_install_it(spark_ready: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        spark,
        [str(tmp_path), str(tmp_path / "out")],
        env={"JAVA_HOME": str(tmp_path / "no-jdk")},
    )
    assert result.exit_code == 2, result.output
    assert "has no bin/java" in result.output
    assert "apt-get install openjdk-17-jre-headless" in result.output


def test_predict_fn_in_process_encodes_nulls_as_the_udf_needs(
    spark_ready: str, images: Path
) -> None:
    """The executor's function, called here (no task: the CPU): what predict_batch_udf is
    given, before classify_udf puts the nulls back."""
    source = ConfigSource.capture(None, {"max_pixels": MAX_PIXELS})
    predict = make_predict_fn(source, TOP_K, ("pool",))()
    names = ["cat.jpg", "corrupt.jpg", "huge.jpg", "noise.png"]
    batch = np.array([(images / name).read_bytes() for name in names], dtype=object)
    rows = predict(batch)
    assert [row["error"] for row in rows] == [NO_ERROR, "bad_image", "too_large", NO_ERROR]
    for row in rows:
        assert set(row) == {"labels", "confidences", "error", "message", "pool"}
        assert all(
            isinstance(row[k], np.ndarray) and row[k].ndim == 1
            for k in ("labels", "confidences", "pool")
        )
        assert isinstance(row["message"], str)
    assert rows[0]["pool"].dtype == np.float32
    assert rows[0]["pool"].shape == (1024,)
    assert rows[1]["pool"].shape == (0,)
    assert rows[1]["labels"].shape == (0,)
    assert rows[0]["message"] == ""
    assert rows[1]["message"]
