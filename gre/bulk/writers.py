"""Streaming writers of :mod:`gre.bulk.rows` rows, chosen by the output's suffix.

* ``.jsonl``: one JSON object per row, keys in column order (``-``: JSON lines on stdout).
* ``.csv``: a header of the column names, then one line per row (the ``csv`` module's
  quoting); list columns (labels, confidences, blobs) as JSON text, nulls as empty cells.
* ``.parquet``: pyarrow, with :func:`gre.bulk.rows.arrow_schema`; rows are buffered into row
  groups of :data:`ROW_GROUP_ROWS`, so memory stays bounded whatever the count.

Each writer takes rows one at a time (:meth:`RowWriter.write`) and must be closed
(:meth:`RowWriter.close`, or use it as a context manager); a Parquet file is complete only
once closed.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from gre.bulk.rows import PYARROW_HINT, arrow_schema, columns

if TYPE_CHECKING:
    import pyarrow.parquet as pq

#: The output suffixes understood, lower-case.
SUFFIXES = (".jsonl", ".csv", ".parquet")
#: The output name that means JSON lines on stdout.
STDOUT = "-"
#: Rows per Parquet row group (with 4096-float fc7 blobs: 16 MiB of floats held at most).
ROW_GROUP_ROWS = 1024


class WriterError(ValueError):
    """The output cannot be written as asked: an unknown suffix, pyarrow missing for
    Parquet, or a file that cannot be created; the message says which and what to do."""


def output_format(output: str) -> str:
    """The format ``output`` names: ``".jsonl"``, ``".csv"`` or ``".parquet"`` (``-``:
    JSON lines on stdout).

    Raises:
        WriterError: another suffix, or Parquet without pyarrow installed.
    """
    if output == STDOUT:
        return ".jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise WriterError(
            f"--output {output}: unknown format {suffix or '(no suffix)'!r}; "
            f"name a file ending in {', '.join(SUFFIXES)}, or - for JSON lines on stdout"
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise WriterError(
                f"--output {output}: Parquet needs pyarrow, which is not installed: {PYARROW_HINT}"
            ) from None
    return suffix


class RowWriter:
    """The base of the writers: :meth:`write` each row, then :meth:`close`.

    Args:
        blobs: the blob columns every row carries, in order (:func:`gre.bulk.rows.columns`).
    """

    def __init__(self, blobs: Sequence[str]) -> None:
        self.columns = columns(blobs)
        self.blobs = tuple(blobs)
        #: Rows written so far.
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        """Write one row (a dict with every column of :attr:`columns`)."""
        self._write(row)
        self.rows += 1

    def _write(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close the output (stdout is flushed, not closed)."""
        raise NotImplementedError

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open_text(output: str) -> IO[str]:
    if output == STDOUT:
        return sys.stdout
    try:
        # newline="": the csv module writes its own line endings.
        return open(output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise WriterError(f"--output {output}: {exc.strerror or exc}") from exc


class JsonLinesWriter(RowWriter):
    """One JSON object per line (UTF-8, non-ASCII kept as is)."""

    def __init__(self, output: str, blobs: Sequence[str]) -> None:
        super().__init__(blobs)
        self._output = output
        self._file = _open_text(output)

    def _write(self, row: dict[str, Any]) -> None:
        ordered = {name: row[name] for name in self.columns}
        self._file.write(json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Flush; close unless stdout."""
        self._file.flush()
        if self._output != STDOUT:
            self._file.close()


class CsvWriter(RowWriter):
    """A header, then one record per row; list columns as JSON text, nulls as ``""``."""

    def __init__(self, output: str, blobs: Sequence[str]) -> None:
        super().__init__(blobs)
        self._file = _open_text(output)
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.columns)

    def _write(self, row: dict[str, Any]) -> None:
        self._csv.writerow([_cell(row[name]) for name in self.columns])

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


class ParquetWriter(RowWriter):
    """Rows into a Parquet file of :func:`gre.bulk.rows.arrow_schema`, a row group per
    :data:`ROW_GROUP_ROWS` rows (a file with no rows still has the schema).

    Raises:
        WriterError: pyarrow is missing, or the file cannot be created.
    """

    def __init__(self, output: str, blobs: Sequence[str]) -> None:
        super().__init__(blobs)
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise WriterError(
                f"Parquet needs pyarrow, which is not installed: {PYARROW_HINT}"
            ) from None
        self._schema = arrow_schema(blobs)
        try:
            self._writer: pq.ParquetWriter = pq.ParquetWriter(output, self._schema)
        except OSError as exc:
            raise WriterError(f"--output {output}: {exc}") from exc
        self._buffer: list[dict[str, Any]] = []

    def _write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self._buffer = []

    def close(self) -> None:
        """Write the buffered rows and the footer."""
        self._flush()
        self._writer.close()


def open_writer(output: str, blobs: Sequence[str]) -> RowWriter:
    """The writer for ``output``'s suffix (see module docstring).

    Raises:
        WriterError: as :func:`output_format`, or the file cannot be created.
    """
    kind = output_format(output)
    if kind == ".csv":
        return CsvWriter(output, blobs)
    if kind == ".parquet":
        return ParquetWriter(output, blobs)
    return JsonLinesWriter(output, blobs)
