"""Bulk classification on Spark: :func:`~gre.spark.udf.classify_udf` (gre's classifier as a
column function over ``binaryFile`` images, built on ``predict_batch_udf``) and the
``gre spark`` job (:mod:`gre.spark.job`, :mod:`gre.spark.command`); docs/spark.md.

Importing this package does not import PySpark (the ``[spark]`` extra): the names below are
loaded on first use, and :func:`gre.spark.needs.require_spark` says what is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gre.spark.job import run_job, spark_session
    from gre.spark.predict import ConfigSource
    from gre.spark.udf import classify_udf, spark_schema

__all__ = ["ConfigSource", "classify_udf", "run_job", "spark_schema", "spark_session"]

_HOMES = {
    "ConfigSource": "gre.spark.predict",
    "classify_udf": "gre.spark.udf",
    "spark_schema": "gre.spark.udf",
    "run_job": "gre.spark.job",
    "spark_session": "gre.spark.job",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
