"""``gre spark INPUT OUTPUT``: classify a folder, glob, HDFS or S3 path of images on Spark and
write Parquet rows (:mod:`gre.bulk.rows`' columns). PySpark is imported only when the command
runs, so ``gre --help`` works without the ``[spark]`` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

#: Exit statuses, as ``gre classify``'s: some rows have an error; usage, configuration or
#: missing PySpark/Java (nothing ran).
EXIT_ROW_ERRORS = 1
EXIT_USAGE = 2
#: The Spark job itself failed (a task failed for good, an input that does not exist).
EXIT_JOB_FAILED = 1


def _features(value: str | None) -> tuple[str, ...]:
    names = tuple(name.strip() for name in (value or "").split(",") if name.strip())
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r}: comma-separated distinct blob names")
    return names


def _error(message: str, status: int) -> None:
    click.echo(f"gre: error: {message}", err=True)
    sys.exit(status)


@click.command("spark")
@click.argument("input_path", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GRE_CONFIG",
    help="TOML config file (default: the embedded open_nsfw model). Env: GRE_CONFIG.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config key, e.g. --set engine=caffe (repeatable).",
)
@click.option(
    "--features",
    metavar="BLOB[,BLOB...]",
    help="Blobs to write per image, one float list column each, e.g. fc7,pool5.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    help="Classes per image (default server.default_top_k, 5; 0: none, features only).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per forward pass in each Python worker.",
)
@click.option(
    "--master",
    help="Spark master, e.g. local[2]; default: spark-submit's --master, else local[*].",
)
@click.option(
    "--glob",
    default=None,
    help="File names to take (Hadoop glob; default the image suffixes gre classify takes, "
    "either case; '*' takes every file).",
)
@click.option("-r", "--recursive", is_flag=True, help="Take the folders below INPUT too.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def spark(
    input_path: str,
    output: str,
    config_path: Path | None,
    settings: tuple[str, ...],
    features: str | None,
    top_k: int | None,
    batch_size: int,
    master: str | None,
    glob: str | None,
    recursive: bool,
    overwrite: bool,
) -> None:
    """Classify the images of INPUT (a file, folder or glob on any Hadoop file system:
    /data, 'hdfs:///photos/*.jpg', s3a://bucket/photos) on Spark and write one Parquet row
    per image to the folder OUTPUT: SampleID (the file's URI), labels, confidences, error,
    message, then one float list per --features blob (docs/spark.md). Under spark-submit it
    runs on the cluster's executors (a GPU each, where given).

    Exit 0: all classified; 1: some rows have an error, or the job failed; 2: a usage or
    configuration error, or PySpark or Java missing (nothing ran).
    """
    from gre.cli import parse_settings
    from gre.config import ConfigError
    from gre.service import StartupError
    from gre.spark.needs import SparkUnavailable, require_spark

    try:
        require_spark()
    except SparkUnavailable as exc:
        _error(str(exc), EXIT_USAGE)
    from pyspark.errors import PySparkException

    from gre.spark.job import IMAGE_GLOB, run_job, spark_session
    from gre.spark.predict import ConfigSource
    from gre.spark.udf import check_model

    blobs = _features(features)
    absolute = config_path.absolute() if config_path is not None else None
    try:
        source = ConfigSource.capture(absolute, parse_settings(settings))
        config = source.load()
    except ConfigError as exc:
        _error(str(exc), EXIT_USAGE)
    k = config.server.default_top_k if top_k is None else top_k
    try:
        check_model(config, blobs)  # in seconds, before a JVM starts
    except (StartupError, ValueError) as exc:
        _error(str(exc), EXIT_USAGE)
    session = spark_session(master)
    try:
        summary = run_job(
            session, input_path, output, source, k, blobs, batch_size,
            glob or IMAGE_GLOB, recursive, overwrite,
        )  # fmt: skip
    except (StartupError, ValueError) as exc:
        _error(str(exc), EXIT_USAGE)
    except PySparkException as exc:
        _error(f"the Spark job failed: {exc}", EXIT_JOB_FAILED)
    finally:
        session.stop()
    click.echo(f"{summary.line()}; wrote {output}", err=True)
    sys.exit(EXIT_ROW_ERRORS if summary.errors else 0)
