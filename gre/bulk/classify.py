"""``gre classify``'s two outputs over the bulk pipeline (:mod:`gre.bulk.run`), each with the
progress bar (:mod:`gre.bulk.progress`): rows into a file (:func:`write_rows`), or the
API's JSON answers (:func:`api_answers`, what ``gre classify`` prints without ``--output``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gre.bulk.progress import BulkProgress
from gre.bulk.rows import outcome_row
from gre.bulk.run import Item, Summary, run
from gre.bulk.writers import RowWriter, open_writer
from gre.config import Config
from gre.messages import ItemError
from gre.model.labels import answer


def write_rows(
    config: Config,
    paths: Sequence[str],
    output: str,
    top_k: int,
    blobs: tuple[str, ...] = (),
    window: int | None = None,
) -> Summary:
    """Classify ``paths`` and write one row each (:mod:`gre.bulk.rows`), in input order, to
    ``output`` (its suffix chooses the format: :func:`gre.bulk.writers.open_writer`). The
    file is created before the replicas start and is complete when this returns, or holds
    the rows answered so far when it raises.

    Raises:
        gre.bulk.writers.WriterError: the output cannot be written as asked.
        gre.bulk.run.BlobError, gre.bulk.run.BulkError, gre.service.StartupError: as
            :func:`gre.bulk.run.run_service`.
    """
    writers: list[RowWriter] = []

    def open_output() -> None:
        writers.append(open_writer(output, blobs))

    with BulkProgress(len(paths)) as progress:

        def on_item(item: Item) -> None:
            writers[0].write(outcome_row(item.sample_id, item.outcome, item.labels, blobs))
            progress.advance(item.failed)

        try:
            return run(config, paths, top_k, blobs, on_item, window, before_start=open_output)
        finally:
            for writer in writers:
                writer.close()


def api_answers(
    config: Config, paths: Sequence[str], top_k: int, window: int | None = None
) -> tuple[dict[str, Any], Summary]:
    """Classify ``paths``; returns ``{path: [{"confidence", "label"}, ...] or {"error",
    "message"}}`` in input order (as ``POST /api/classify`` answers each) and the
    :class:`~gre.bulk.run.Summary`.

    Raises:
        gre.bulk.run.BulkError, gre.service.StartupError: as
            :func:`gre.bulk.run.run_service`.
    """
    answers: dict[str, Any] = {}
    with BulkProgress(len(paths)) as progress:

        def on_item(item: Item) -> None:
            outcome = item.outcome
            answers[item.sample_id] = (
                {"error": outcome.code, "message": outcome.message}
                if isinstance(outcome, ItemError)
                else answer(outcome, item.labels)
            )
            progress.advance(item.failed)

        summary = run(config, paths, top_k, (), on_item, window)
    return answers, summary
