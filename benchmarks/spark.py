"""``python -m benchmarks.spark``: images/s of the ``gre spark`` job on Spark ``local[2]``
against the in-process limit, on the same images at the same batch size.

The in-process limit is one :class:`~gre.model.classifier.Classifier` on every core
(``gre.offline.build_classifier``) classifying the images in batches of ``--batch-size``
after one warm-up batch, header checks included: what gre can do in one process without
Spark. The Spark figure is :func:`gre.spark.job.run_job` end to end (listing and reading
the files, the Python workers, each loading the model once, the Parquet written), twice:
the first job also starts the Python workers, the second reuses them (Spark keeps its
workers; the model is loaded again, since each UDF is new). Images are real photos and
crops of them (:func:`benchmarks.data.distinct_jpegs`) written to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.data import distinct_jpegs
from gre.config import Config, load_config
from gre.model.imaging import check_image
from gre.offline import build_classifier


def in_process_images_per_s(config: Config, images: Sequence[bytes], batch_size: int) -> float:
    """images/s of one in-process Classifier over ``images``, ``batch_size`` at a time."""
    classifier = build_classifier(config)
    top_k = config.server.default_top_k
    try:
        classifier.classify(images[:batch_size], [top_k] * min(batch_size, len(images)))
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            batch = images[first : first + batch_size]
            for data in batch:
                check_image(data, config.server.max_pixels)
            classifier.classify(batch, [top_k] * len(batch))
        return len(images) / (time.perf_counter() - start)
    finally:
        classifier.close()


def spark_images_per_s(
    folder: Path, output: Path, config: Config, batch_size: int, master: str, runs: int
) -> list[float]:
    """images/s of each of ``runs`` ``gre spark`` jobs on ``folder`` in one session."""
    from gre.spark.job import run_job, spark_session

    session = spark_session(master)
    session.sparkContext.setLogLevel("ERROR")
    try:
        figures = []
        for run in range(runs):
            summary = run_job(
                session, str(folder), str(output / f"run{run}"), config,
                config.server.default_top_k, (), batch_size,
            )  # fmt: skip
            if summary.errors:
                raise RuntimeError(f"{summary.errors} of the images failed: {summary.line()}")
            figures.append(summary.images_per_s)
        return figures
    finally:
        session.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Print the in-process limit, each Spark job's images/s and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark", description=__doc__)
    parser.add_argument("--images", type=int, default=200, help="images (default 200)")
    parser.add_argument("--batch-size", type=int, default=32, help="per forward (default 32)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--runs", type=int, default=2, help="Spark jobs (default 2)")
    args = parser.parse_args(argv)
    from gre.spark.needs import require_spark

    print(require_spark())
    config = load_config(None)
    images = distinct_jpegs(args.images)
    with tempfile.TemporaryDirectory(prefix="gre-spark-bench-") as tmp:
        folder = Path(tmp, "images")
        folder.mkdir()
        for i, data in enumerate(images):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        limit = in_process_images_per_s(config, images, args.batch_size)
        print(f"model {config.model.name}, {len(images)} images, batch size {args.batch_size}")
        print(f"in-process limit (one classifier, every core): {limit:.2f} images/s")
        runs = spark_images_per_s(
            folder, Path(tmp, "out"), config, args.batch_size, args.master, args.runs
        )
        for run, figure in enumerate(runs, 1):
            print(
                f"spark {args.master} job {run}{' (starts the workers)' if run == 1 else ''}: "
                f"{figure:.2f} images/s = {figure / limit:.2f} x the in-process limit"
            )


if __name__ == "__main__":
    main()
