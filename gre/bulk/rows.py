"""One output row per image, as CaffeOnSpark's feature output: what ``gre classify`` writes
(JSON lines, CSV, Parquet) and what ``gre spark`` writes (Parquet), column for column.

CaffeOnSpark's ``-features`` job writes a DataFrame with ``SampleID`` and one float-array
column per blob named; gre adds the top-k labels and confidences, and the error of an image
that could not be read or classified (its row is kept, with empty predictions), so that a
bulk job never aborts on one bad file and every input has a row.

Columns, in order:

========== =============== ===================================================
SampleID   string          the image's path (or the Spark ``binaryFile`` path)
labels     list<string>    top-k labels, most probable first (empty on error)
confidences list<float64>  their probabilities
error      string or null  the API error code (``bad_image``, ``unreadable``...)
message    string or null  what was wrong
<blob>     list<float32>   one per ``--features`` blob, flattened C, H, W
                           (null on error)
========== =============== ===================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gre.messages import ItemError, Prediction
from gre.model.labels import label

if TYPE_CHECKING:
    import pyarrow as pa

SAMPLE_ID = "SampleID"
#: The columns every row has before the blobs', in order.
FIXED_COLUMNS = (SAMPLE_ID, "labels", "confidences", "error", "message")
#: What to install for Parquet (pyarrow is an optional dependency).
PYARROW_HINT = "pip install 'gre[bulk]'"


def columns(blobs: Sequence[str]) -> list[str]:
    """Every column of a row, in order: :data:`FIXED_COLUMNS`, then one per blob.

    Raises:
        ValueError: a blob named like a fixed column, or named twice.
    """
    clash = [name for name in blobs if name in FIXED_COLUMNS]
    if clash or len(set(blobs)) != len(blobs):
        raise ValueError(f"blob names must be distinct and not {', '.join(FIXED_COLUMNS)}")
    return [*FIXED_COLUMNS, *blobs]


def prediction_row(
    sample_id: str, prediction: Prediction, labels: list[str] | None, blobs: Sequence[str]
) -> dict[str, Any]:
    """The row of an image classified: top-k labels and confidences, and each blob of
    ``blobs`` as a list of floats (from ``prediction.features``, ``(D,) float32``).

    Raises:
        KeyError: a blob of ``blobs`` the prediction does not carry.
    """
    row: dict[str, Any] = {
        SAMPLE_ID: sample_id,
        "labels": [label(labels, index) for index in prediction.indices],
        "confidences": [float(c) for c in prediction.confidences],
        "error": None,
        "message": None,
    }
    for name in blobs:
        row[name] = prediction.features[name].tolist()
    return row


def error_row(sample_id: str, code: str, message: str, blobs: Sequence[str]) -> dict[str, Any]:
    """The row of an image that could not be read or classified: empty predictions, the
    error's code and message, null blobs."""
    row: dict[str, Any] = {
        SAMPLE_ID: sample_id,
        "labels": [],
        "confidences": [],
        "error": code,
        "message": message,
    }
    row.update(dict.fromkeys(blobs))
    return row


def outcome_row(
    sample_id: str,
    outcome: Prediction | ItemError,
    labels: list[str] | None,
    blobs: Sequence[str],
) -> dict[str, Any]:
    """:func:`prediction_row` or :func:`error_row`, as ``outcome`` is."""
    if isinstance(outcome, ItemError):
        return error_row(sample_id, outcome.code, outcome.message, blobs)
    return prediction_row(sample_id, outcome, labels, blobs)


def arrow_schema(blobs: Sequence[str]) -> pa.Schema:
    """The Parquet (Arrow) schema of these rows, explicit so that ``gre classify --output
    X.parquet`` and ``gre spark`` write the same file for the same images: ``SampleID``
    string, ``labels`` list<string>, ``confidences`` list<float64>, ``error`` and ``message``
    string, then one list<float32> per blob, in :func:`columns` order; every column nullable
    (Spark's default).

    Raises:
        ModuleNotFoundError: pyarrow is not installed (the message says what to install).
        ValueError: as :func:`columns`.
    """
    try:
        import pyarrow as pa
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"Parquet needs pyarrow, which is not installed: {PYARROW_HINT}", name="pyarrow"
        ) from exc
    fixed = [pa.string(), pa.list_(pa.string()), pa.list_(pa.float64()), pa.string(), pa.string()]
    types = [*fixed, *(pa.list_(pa.float32()) for _ in blobs)]
    return pa.schema([pa.field(n, t) for n, t in zip(columns(blobs), types, strict=True)])
