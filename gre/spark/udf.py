"""``classify_udf``: gre's classifier as a Spark column function over encoded images, built
on :func:`pyspark.ml.functions.predict_batch_udf` (the model is loaded once per Python worker
and cached there), and the Spark schema of :mod:`gre.bulk.rows`' rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    FloatType,
    StringType,
    StructField,
    StructType,
)

from gre.bulk.rows import FIXED_COLUMNS, SAMPLE_ID, columns
from gre.config import Config
from gre.model.engines import unknown_blobs_error
from gre.model.loader import ModelError, load_model
from gre.service import StartupError
from gre.spark.predict import NO_ERROR, ConfigSource, make_predict_fn

#: Images per ``predict_fn`` call (one forward) unless told otherwise.
DEFAULT_BATCH_SIZE = 32

_TYPES: dict[str, DataType] = {
    SAMPLE_ID: StringType(),
    "labels": ArrayType(StringType()),
    "confidences": ArrayType(DoubleType()),
    "error": StringType(),
    "message": StringType(),
}


def spark_schema(blobs: Sequence[str], sample_id: bool = True) -> StructType:
    """The Spark schema of :mod:`gre.bulk.rows`' rows (its ``arrow_schema`` in Spark's
    types): SampleID string, labels ``array<string>``, confidences ``array<double>``, error
    and message strings, then ``array<float>`` per blob; every field nullable. Without
    ``sample_id``: the struct :func:`classify_udf`'s column holds (all but SampleID).

    Raises:
        ValueError: a blob named like a fixed column, or named twice.
    """
    names = columns(blobs)
    fields = [
        StructField(name, _TYPES.get(name, ArrayType(FloatType())), nullable=True)
        for name in names
        if sample_id or name != SAMPLE_ID
    ]
    return StructType(fields)


def check_model(config: Config, blobs: Sequence[str]) -> None:
    """Refuse, on the driver before any task runs, a model that cannot be read or blobs it
    lacks.

    Raises:
        StartupError: the model's files cannot be read (:func:`gre.model.loader.load_model`).
        ValueError: a blob the net lacks (the message lists its blobs), or one named like a
            fixed column or twice.
    """
    columns(blobs)
    try:
        model = load_model(config)
    except ModelError as exc:
        raise StartupError(str(exc)) from exc
    error = unknown_blobs_error(blobs, model.net.blob_names)
    if error is not None:
        raise ValueError(str(error))


def classify_udf(
    config: Config | ConfigSource,
    top_k: int = 5,
    features: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Callable[[Column | str], Column]:
    """A column function: a binary column of encoded images (``binaryFile``'s ``content``)
    in, a struct column of :func:`spark_schema` ``(features, sample_id=False)`` out, one
    per image: its ``top_k`` labels and confidences (most probable first) and each blob of
    ``features`` flattened (``D`` float32 values, C, H, W order), or its error code and
    message with empty labels and null blobs, exactly as ``gre classify --output`` writes.

    ``config`` is shipped to the executors: a :class:`~gre.config.Config` as it is (its
    model paths must exist there), a :class:`~gre.spark.predict.ConfigSource` read again
    on each. The model loads once per Python worker, on the task's GPU if Spark assigned it
    one (``spark.task.resource.gpu.amount``), else on the CPU with ``spark.task.cpus``
    threads. Images go through it ``batch_size`` at a time; keep
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` near it, since a whole Arrow batch of
    images is held in memory. Use: ``df.select(classify_udf(config)("content"))``.

    Raises:
        StartupError, ValueError: as :func:`check_model` (before any task runs).
        gre.config.ConfigError: a :class:`~gre.spark.predict.ConfigSource` that does not load.
    """
    if top_k < 0 or batch_size < 1:
        raise ValueError(f"top_k must be >= 0 and batch_size >= 1, not {top_k}, {batch_size}")
    blobs = tuple(features)
    check_model(config.load() if isinstance(config, ConfigSource) else config, blobs)
    raw = predict_batch_udf(
        # pyspark types a row's values as np.dtype; they are arrays and strings (encode)
        cast(Any, make_predict_fn(config, top_k, blobs)),
        return_type=spark_schema(blobs, sample_id=False),
        batch_size=batch_size,
    )

    def apply(images: Column | str) -> Column:
        answered = raw(images)
        ok = answered["error"] == F.lit(NO_ERROR)
        # predict_batch_udf refuses nulls in its rows (gre.spark.predict.encode): put back
        # the nulls of gre.bulk.rows' error row and of a classified image's error columns.
        fields = {name: answered[name] for name in FIXED_COLUMNS if name != SAMPLE_ID}
        fields["error"] = F.when(~ok, answered["error"])
        fields["message"] = F.when(~ok, answered["message"])
        fields.update({name: F.when(ok, answered[name]) for name in blobs})
        return F.struct(*(column.alias(name) for name, column in fields.items()))

    return apply
