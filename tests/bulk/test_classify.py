"""``gre classify`` end to end, as a user runs it (``python -m gre classify`` in a
subprocess, the default open_nsfw model on its real engine and replicas): real photos and
synthetic JPEGs and PNGs, a corrupt JPEG, a file that is no image, a missing path and a
folder named in a list. Every input gets one row, in input order; bad ones carry their
error; the blobs equal the engine's own for the same image, called in this process; the
three formats and the API's JSON agree; usage errors exit 2 before any image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from gre.config import load_config
from gre.messages import Prediction
from gre.model.classifier import Classifier
from gre.offline import build_classifier
from tests.support import ROOT, shared

BLOBS = ("pool", "fc_nsfw")
SUMMARY = re.compile(r"classified (\d+) images in [0-9.]+ s: [0-9.]+ images/s \((\d+) errors\)")


def gre(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gre", "classify", *args], capture_output=True, text=True,
        cwd=ROOT, timeout=300,
    )  # fmt: skip


def synthetic(seed: int, suffix: str) -> bytes:
    """A 160x120 seeded gradient with noise and a disc, encoded by OpenCV."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:120, 0:160]
    image = np.stack([x * 1.5, y * 2.0, (x + y) * 0.9], axis=-1) + rng.normal(0, 20, (120, 160, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    cv2.circle(image, (int(rng.integers(30, 130)), 60), 25, (int(seed * 40 % 255), 30, 200), -1)
    ok, encoded = cv2.imencode(suffix, image)
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The folder, the arguments to pass, and the SampleIDs (and errors) expected in order."""
    root = tmp_path_factory.mktemp("corpus")
    photos = root / "photos"
    (photos / "nested").mkdir(parents=True)
    for name in ("cat.jpg", "cat_gray.jpg", "fish-bike.jpg"):
        shutil.copy(shared(f"images/{name}"), photos / name)
    for i in range(4):
        (photos / f"synthetic-{i}.jpg").write_bytes(synthetic(i, ".jpg"))
    (photos / "nested" / "deep.PNG").write_bytes(synthetic(9, ".png"))
    (photos / "readme.md").write_text("not taken from a folder")
    cat = shared("images/cat.jpg").read_bytes()
    (photos / "zz-corrupt.jpg").write_bytes(cat[: len(cat) // 3] + bytes(1000))  # header ok
    (photos / "zz-text.jpg").write_text("a text file named like a photo")
    listing = root / "lists" / "more.txt"
    listing.parent.mkdir()
    listing.write_text("# a list\n../photos/cat.jpg\n\n../photos/nested\nabsent.webp\n")
    missing = root / "missing.jpg"
    expected = [
        *(str(photos / n) for n in ("cat.jpg", "cat_gray.jpg", "fish-bike.jpg")),
        *(str(photos / f"synthetic-{i}.jpg") for i in range(4)),
        str(photos / "zz-corrupt.jpg"),
        str(photos / "zz-text.jpg"),
        str(photos / "nested" / "deep.PNG"),
        str(listing.parent / "../photos/cat.jpg"),
        str(listing.parent / "../photos/nested"),
        str(listing.parent / "absent.webp"),
        str(missing),
    ]
    errors = {
        str(photos / "zz-corrupt.jpg"): "bad_image",  # fails in the replica's decoder
        str(photos / "zz-text.jpg"): "bad_image",  # refused by its header, never submitted
        str(listing.parent / "../photos/nested"): "unreadable",  # a folder read as a file
        str(listing.parent / "absent.webp"): "unreadable",
        str(missing): "unreadable",
    }
    args = [str(photos), str(listing), str(missing), "--recursive"]
    return {"args": args, "expected": expected, "errors": errors}


@pytest.fixture(scope="module")
def direct() -> Iterator[Classifier]:
    classifier = build_classifier(load_config(None, {}))
    yield classifier
    classifier.close()


def run_to(tmp: Path, corpus: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """``gre classify ARGS --output tmp/name --features pool,fc_nsfw``; checks the exit status
    and the closing line, and returns the rows as dicts (JSON text decoded for CSV)."""
    output = tmp / name
    result = gre(
        *corpus["args"], "--output", str(output), "--features", ",".join(BLOBS),
        "--top-k", "2", "--batch-size", "4",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # some rows have an error
    summary = SUMMARY.search(result.stderr)
    assert summary, result.stderr
    assert summary.groups() == (str(len(corpus["expected"])), str(len(corpus["errors"])))
    assert result.stdout == ""
    if name.endswith(".parquet"):
        rows: list[dict[str, Any]] = pq.read_table(output).to_pylist()
        return rows
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def parquet_rows(
    tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Any]
) -> list[dict[str, Any]]:
    return run_to(tmp_path_factory.mktemp("out"), corpus, "rows.parquet")


def test_one_row_per_input_in_input_order(
    parquet_rows: list[dict[str, Any]], corpus: dict[str, Any]
) -> None:
    assert [row["SampleID"] for row in parquet_rows] == corpus["expected"]


def test_bad_files_are_rows_with_their_error(
    parquet_rows: list[dict[str, Any]], corpus: dict[str, Any]
) -> None:
    errors = {row["SampleID"]: row["error"] for row in parquet_rows if row["error"]}
    assert errors == corpus["errors"]
    for row in parquet_rows:
        if row["error"]:
            assert row["message"]
            assert (row["labels"], row["confidences"]) == ([], [])
            assert all(row[blob] is None for blob in BLOBS)
    messages = {row["SampleID"]: row["message"] for row in parquet_rows}
    assert "No such file or directory" in messages[corpus["expected"][-1]]
    assert "Is a directory" in messages[corpus["expected"][-3]]


def test_predictions_and_blobs_equal_the_engines_own(
    parquet_rows: list[dict[str, Any]], direct: Classifier
) -> None:
    good = [row for row in parquet_rows if not row["error"]]
    assert len(good) == 9
    for row in good:
        data = Path(row["SampleID"]).read_bytes()
        want = direct.classify([data], [2], [BLOBS]).outcomes[0]
        assert isinstance(want, Prediction), row["SampleID"]
        assert row["labels"] == [["sfw", "nsfw"][i] for i in want.indices]
        assert np.allclose(row["confidences"], want.confidences, atol=1e-5)
        for blob in BLOBS:
            got = np.asarray(row[blob], dtype=np.float32)
            expected = want.features[blob]
            assert got.shape == expected.shape, blob
            scale = max(1.0, float(np.abs(expected).max()))
            assert float(np.abs(got - expected).max()) <= 1e-4 * scale, (row["SampleID"], blob)
    assert len(good[0]["pool"]) == 1024
    assert len(good[0]["fc_nsfw"]) == 2


def test_jsonl_holds_the_same_rows_as_parquet(
    tmp_path: Path, parquet_rows: list[dict[str, Any]], corpus: dict[str, Any]
) -> None:
    rows = run_to(tmp_path, corpus, "rows.jsonl")
    assert [list(row) for row in rows] == [["SampleID", "labels", "confidences", "error",
                                            "message", *BLOBS]] * len(rows)  # fmt: skip
    for got, want in zip(rows, parquet_rows, strict=True):
        assert {k: got[k] for k in ("SampleID", "labels", "error", "message")} == {
            k: want[k] for k in ("SampleID", "labels", "error", "message")
        }
        assert np.allclose(got["confidences"], want["confidences"], atol=1e-6)
        for blob in BLOBS:  # batches differ from run to run: equal within float rounding
            if want[blob] is not None:
                assert np.allclose(got[blob], want[blob], rtol=1e-4, atol=1e-5), blob


def test_without_output_it_prints_the_apis_json(
    parquet_rows: list[dict[str, Any]], corpus: dict[str, Any]
) -> None:
    result = gre(*corpus["args"], "--top-k", "1")
    assert result.returncode == 1, result.stderr
    answers = json.loads(result.stdout)
    assert list(answers) == list(dict.fromkeys(corpus["expected"]))  # keyed by path, in order
    for row in parquet_rows:
        answer = answers[row["SampleID"]]
        if row["error"]:
            assert answer == {"error": row["error"], "message": row["message"]}
        else:
            assert [a["label"] for a in answer] == row["labels"][:1]
            assert answer[0]["confidence"] == pytest.approx(row["confidences"][0], abs=1e-6)
    assert SUMMARY.search(result.stderr)


def test_usage_errors_exit_2_before_any_image(tmp_path: Path) -> None:
    photo = str(shared("images/cat.jpg"))
    output = tmp_path / "rows.parquet"
    bad_blob = gre(photo, "--output", str(output), "--features", "pool,fc7")
    assert bad_blob.returncode == 2
    assert "not a blob of this net: fc7; its blobs: data, conv_1," in bad_blob.stderr
    assert not output.exists()  # checked before the output is created
    assert "classified" not in bad_blob.stderr
    suffix = gre(photo, "--output", str(tmp_path / "rows.xlsx"))
    assert suffix.returncode == 2
    assert "unknown format '.xlsx'" in suffix.stderr
    no_output = gre(photo, "--features", "pool")
    assert no_output.returncode == 2
    assert "--features needs --output" in no_output.stderr
    for result in (bad_blob, suffix, no_output):
        assert "Traceback" not in result.stderr
