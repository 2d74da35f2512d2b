"""gre.bulk.writers: each format round-trips the rows (Parquet read back with pyarrow and its
explicit schema, CSV with the csv module, JSON lines with json), in order; unknown suffixes
are refused; Parquet writes row groups as it goes and an empty file still has the schema."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gre.bulk.writers as writers
from gre.bulk.rows import arrow_schema, columns, error_row, outcome_row
from gre.bulk.writers import WriterError, open_writer, output_format
from gre.messages import ItemError, Prediction

BLOBS = ("fc7", "pool5")


def sample_rows(count: int) -> list[dict[str, Any]]:
    """Classified rows with float32 blobs of two sizes, and an error row every third."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(count):
        outcome: Prediction | ItemError
        if i % 3 == 2:
            outcome = ItemError("bad_image", f"image {i}: corrupt, «é»")
        else:
            features = {
                "fc7": rng.standard_normal(8).astype(np.float32),
                "pool5": rng.standard_normal(3).astype(np.float32),
            }
            outcome = Prediction((1, 0), (0.75 - i / 1000, 0.25), features)
        rows.append(outcome_row(f'dir/image {i},"quoted".jpg', outcome, ["cat", "dög"], BLOBS))
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    with open_writer(str(path), BLOBS) as writer:
        for row in rows:
            writer.write(row)
    assert writer.rows == len(rows)


def test_jsonl_round_trips(tmp_path: Path) -> None:
    rows = sample_rows(7)
    write(tmp_path / "rows.jsonl", rows)
    lines = (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    back = [json.loads(line) for line in lines]
    assert back == rows
    assert all(list(row) == columns(BLOBS) for row in back)


def test_csv_round_trips_with_lists_as_json(tmp_path: Path) -> None:
    rows = sample_rows(7)
    write(tmp_path / "rows.csv", rows)
    with open(tmp_path / "rows.csv", encoding="utf-8", newline="") as file:
        records = list(csv.reader(file))
    assert records[0] == columns(BLOBS)
    assert len(records) == 1 + len(rows)
    for record, row in zip(records[1:], rows, strict=True):
        got = dict(zip(records[0], record, strict=True))
        assert got["SampleID"] == row["SampleID"]
        assert got["error"] == (row["error"] or "")
        assert got["message"] == (row["message"] or "")
        for name in ("labels", "confidences", *BLOBS):
            assert (json.loads(got[name]) if got[name] else None) == row[name], name


def test_parquet_round_trips_with_the_explicit_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", 4)  # several row groups and a remainder
    rows = sample_rows(11)
    write(tmp_path / "rows.parquet", rows)
    file = pq.ParquetFile(tmp_path / "rows.parquet")
    assert file.metadata.num_row_groups == 3
    table = file.read()
    assert table.schema.equals(arrow_schema(BLOBS))
    back = table.to_pylist()
    assert [r["SampleID"] for r in back] == [r["SampleID"] for r in rows]
    for got, row in zip(back, rows, strict=True):
        assert {k: got[k] for k in ("labels", "confidences", "error", "message")} == {
            k: row[k] for k in ("labels", "confidences", "error", "message")
        }
        for name in BLOBS:  # float32 in, float32 out: exact
            assert got[name] == row[name]


def test_the_schema_names_each_type() -> None:
    schema = arrow_schema(BLOBS)
    assert schema.names == columns(BLOBS)
    assert [schema.field(n).type for n in schema.names] == [
        pa.string(),
        pa.list_(pa.string()),
        pa.list_(pa.float64()),
        pa.string(),
        pa.string(),
        pa.list_(pa.float32()),
        pa.list_(pa.float32()),
    ]
    with pytest.raises(ValueError, match="distinct"):
        arrow_schema(["error"])


def test_an_empty_output_still_has_its_columns(tmp_path: Path) -> None:
    for name in ("empty.parquet", "empty.csv", "empty.jsonl"):
        write(tmp_path / name, [])
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(arrow_schema(BLOBS))
    assert (tmp_path / "empty.csv").read_text().strip() == ",".join(columns(BLOBS))
    assert (tmp_path / "empty.jsonl").read_text() == ""


def test_an_error_row_has_null_blobs_in_every_format(tmp_path: Path) -> None:
    row = error_row("x.jpg", "unreadable", "x.jpg: No such file or directory", BLOBS)
    write(tmp_path / "one.parquet", [row])
    assert pq.read_table(tmp_path / "one.parquet").to_pylist() == [row]


def test_formats_by_suffix_and_unknown_ones_refused(tmp_path: Path) -> None:
    assert output_format("a/b.JSONL") == ".jsonl"
    assert output_format("b.Parquet") == ".parquet"
    assert output_format("-") == ".jsonl"
    for bad in ("rows.json", "rows", "rows.parquet.gz"):
        with pytest.raises(WriterError, match="unknown format"):
            output_format(bad)
    with pytest.raises(WriterError, match="No such file or directory"):
        open_writer(str(tmp_path / "absent" / "rows.csv"), BLOBS)


def test_stdout_gets_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    rows = sample_rows(2)
    with open_writer("-", BLOBS) as writer:
        for row in rows:
            writer.write(row)
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows


def test_parquet_without_pyarrow_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    with pytest.raises(WriterError, match=re.escape("pip install 'gre[bulk]'")):
        output_format("rows.parquet")
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'gre[bulk]'")):
        arrow_schema(BLOBS)
    assert output_format("rows.csv") == ".csv"
