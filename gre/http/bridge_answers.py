"""A classify request's 200 crosses the bridge as its prediction, and the HTTP worker makes
the answer's bytes: the JSON and the headers, the per-request work that grows with ``top_k``.

The primary holds every classify request from admission to its access-log line, so what it
spends per request bounds how far more workers can scale. Encoding the answer was the largest
piece of it that needs nothing the primary alone has: one ``float.__repr__`` per class
answered, the ``Server-Timing`` text, the header list and its pickle, 9.5 us a request
against 0.8 for the prediction's numbers (measured on this project's 2-core VM).

primary -> worker
    ``(LABELS, key, labels, forget)``: a model's labels, the first time an answer of that
    model goes to this worker process; ``forget``: the key of labels it may drop (it keeps
    :data:`KEPT_LABELS`), or ``None``;
    ``(ANSWER, id, key, indices, confidences, queue_ms, preprocess_ms, inference_ms,
    request_id)``: the 200 of request ``id``, whose labels are those of ``key``.

The worker's :class:`AnswerBook` turns an ``ANSWER`` into the ``RESPONSE`` the primary would
have sent, byte for byte: the same :class:`gre.model.labels.AnswerEncoder` and
:func:`gre.http.classify_exchange.success_headers`. Labels go per model (an encoder), not per
reload: during a reload the old and the new model both answer, each with its own labels.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

from gre.batching.scheduler import Completed
from gre.http import bridge
from gre.http.classify_exchange import success_headers
from gre.http.errors import internal_error
from gre.http.request_parts import timing_header
from gre.messages import Prediction
from gre.model.labels import AnswerEncoder

log = logging.getLogger("gre.http.bridge_answers")

#: How many models' labels a worker keeps: a reload's two, and room for reloads in a row.
KEPT_LABELS = 4


def crosses_as_prediction(prediction: Prediction) -> bool:
    """Whether ``prediction``'s answer can be made by the worker: every confidence finite.
    A NaN or an infinity is no JSON; the primary encodes those itself and answers 500, as
    in one process."""
    return all(map(math.isfinite, prediction.confidences))


class LabelsSent:
    """The primary's side, for one worker process: which models' labels it has, by key
    (a new process knows none)."""

    def __init__(self) -> None:
        self._keys: dict[AnswerEncoder, int] = {}  # oldest first
        self._numbers = itertools.count()

    def answer(
        self,
        write: Callable[[tuple[Any, ...]], None],
        rid: int,
        encoder: AnswerEncoder,
        completed: Completed,
        request_id: str,
    ) -> None:
        """Write the ``ANSWER`` of request ``rid`` (``completed.outcome`` a
        :class:`Prediction` that :func:`crosses_as_prediction`), after ``LABELS`` when the
        worker lacks ``encoder``'s labels."""
        key = self._keys.get(encoder)
        if key is None:
            key = self._teach(write, encoder)
        prediction = completed.outcome
        assert isinstance(prediction, Prediction)
        write(
            (
                bridge.ANSWER, rid, key, prediction.indices, prediction.confidences,
                completed.queue_ms, completed.preprocess_ms, completed.inference_ms, request_id,
            )
        )  # fmt: skip

    def _teach(self, write: Callable[[tuple[Any, ...]], None], encoder: AnswerEncoder) -> int:
        key = next(self._numbers)
        forget = None
        if len(self._keys) >= KEPT_LABELS:
            oldest = next(iter(self._keys))
            forget = self._keys.pop(oldest)
        self._keys[encoder] = key
        write((bridge.LABELS, key, encoder.labels, forget))
        return key


class AnswerBook:
    """The worker's side: the labels the primary sent, and the answers made with them."""

    def __init__(self) -> None:
        self._encoders: dict[int, AnswerEncoder] = {}

    def learn(self, message: tuple[Any, ...]) -> None:
        """Take a ``LABELS`` message."""
        _, key, labels, forget = message
        self._encoders[key] = AnswerEncoder(labels)
        if forget is not None:
            self._encoders.pop(forget, None)

    def response(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        """The ``(RESPONSE, id, 200, headers, body)`` of an ``ANSWER`` message; should that
        fail (a bug: labels never sent, say), it is logged and the request answered 500
        ``internal``, rather than left waiting."""
        _, rid, key, indices, confidences, queue_ms, preprocess_ms, inference_ms, request_id = (
            message
        )
        try:
            content = self._encoders[key].encode_top(indices, confidences)
        except Exception:
            log.exception("an answer could not be made", extra={"request_id": request_id})
            failed = internal_error(request_id)
            return (bridge.RESPONSE, rid, 500, failed.raw_headers, bytes(failed.body))
        timing = timing_header(queue_ms, preprocess_ms, inference_ms)
        return (bridge.RESPONSE, rid, 200, success_headers(timing, content, request_id), content)
