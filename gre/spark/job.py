"""The ``gre spark`` job: images read with Spark's ``binaryFile`` source, classified by
:func:`gre.spark.udf.classify_udf`, written as Parquet in :mod:`gre.bulk.rows`' schema.

SampleID is ``binaryFile``'s ``path``: the file's URI as Hadoop prints it (``file:/data/a.jpg``,
``hdfs://nn/data/a.jpg``, ``s3a://bucket/a.jpg``; not percent-encoded), so rows from several
file systems stay apart. ``urllib.parse.urlparse(sample_id).path`` is the local path of a
``file:`` one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gre.bulk.rows import SAMPLE_ID
from gre.config import Config
from gre.spark.predict import ConfigSource
from gre.spark.udf import DEFAULT_BATCH_SIZE, classify_udf

#: The image files ``gre classify`` takes from a directory (Hadoop globs match case
#: sensitively, so both cases are listed; ``--glob '*'`` takes every file).
IMAGE_GLOB = "*.{jpg,jpeg,png,bmp,webp,JPG,JPEG,PNG,BMP,WEBP}"


@dataclass(frozen=True)
class JobSummary:
    """What a job did: ``images`` rows written, ``errors`` among them, ``seconds`` from
    reading the input to the Parquet written (images/s: :attr:`images_per_s`)."""

    images: int
    errors: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Rows written per second of the job (images/s; 0 for an empty job)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """``classified N images in S s: X images/s (E errors)``."""
        return (
            f"classified {self.images} images in {self.seconds:.1f} s: "
            f"{self.images_per_s:.1f} images/s ({self.errors} errors)"
        )


def spark_session(master: str | None = None, app_name: str = "gre spark") -> SparkSession:
    """The session ``gre spark`` runs in, with Arrow on for the pandas UDF.

    Under ``spark-submit`` (which starts this process with ``PYSPARK_GATEWAY_PORT`` set) and
    no ``master``: the session ``spark-submit`` configured (master, executors, their Python:
    docs/spark.md). Otherwise ``master`` (default ``local[*]``); a ``local[...]`` one runs
    its Python workers on this interpreter (``PYSPARK_PYTHON``, unless already set), so they
    import this gre, and binds to 127.0.0.1.
    """
    builder = SparkSession.builder.appName(app_name).config(
        "spark.sql.execution.arrow.pyspark.enabled", "true"
    )
    if master is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        return builder.getOrCreate()
    master = master or "local[*]"
    builder = builder.master(master)
    if master.startswith("local"):
        # PySpark reads the workers' interpreter from the environment when it starts the
        # context (not from spark.pyspark.python); a PYSPARK_PYTHON of the caller's wins.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
        )
    return builder.getOrCreate()


def read_images(
    spark: SparkSession, path: str, glob: str = IMAGE_GLOB, recursive: bool = False
) -> DataFrame:
    """``binaryFile`` rows (``path``, ``modificationTime``, ``length``, ``content``) of the
    files under ``path`` (a file, directory or glob on any Hadoop file system) whose names
    match ``glob``; with ``recursive``, in every folder below too (partition discovery off)."""
    reader = spark.read.format("binaryFile").option("pathGlobFilter", glob)
    if recursive:
        reader = reader.option("recursiveFileLookup", "true")
    return reader.load(path)


def classify_frame(
    images: DataFrame,
    config: Config | ConfigSource,
    top_k: int,
    features: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> DataFrame:
    """The rows (:func:`gre.spark.udf.spark_schema`) of ``binaryFile`` rows ``images``.

    Raises:
        as :func:`gre.spark.udf.classify_udf`.
    """
    classify = classify_udf(config, top_k, features, batch_size)
    answered = images.select(F.col("path").alias(SAMPLE_ID), classify("content").alias("_gre"))
    return answered.select(SAMPLE_ID, "_gre.*")


def run_job(
    spark: SparkSession,
    input_path: str,
    output: str,
    config: Config | ConfigSource,
    top_k: int,
    features: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    glob: str = IMAGE_GLOB,
    recursive: bool = False,
    overwrite: bool = False,
) -> JobSummary:
    """Classify the images of ``input_path`` (:func:`read_images`) and write their rows as
    Parquet to the folder ``output`` (Spark writes one part file per task), then count them.

    Sets ``spark.sql.execution.arrow.maxRecordsPerBatch`` to ``batch_size``, so a Python
    worker holds one batch of images at a time, not Spark's default 10,000.

    Raises:
        StartupError, ValueError: as :func:`gre.spark.udf.classify_udf` (before any task).
        pyspark.errors.PySparkException: the job failed (an input path that does not exist,
            ``output`` existing without ``overwrite``, a task that failed for good).
    """
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    start = time.perf_counter()
    images = read_images(spark, input_path, glob, recursive)
    rows = classify_frame(images, config, top_k, features, batch_size)
    rows.write.mode("overwrite" if overwrite else "errorifexists").parquet(output)
    seconds = time.perf_counter() - start
    written = spark.read.parquet(output)
    counts = written.agg(F.count("*"), F.count("error")).first()
    total, errors = (int(counts[0]), int(counts[1])) if counts is not None else (0, 0)
    return JobSummary(total, errors, seconds)
