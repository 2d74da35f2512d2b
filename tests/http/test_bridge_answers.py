"""A classify request's 200 across the bridge as its prediction (gre.http.bridge_answers):
the worker's bytes are the primary's, labels cross once per model and worker, and a worker
keeps the newest few. The messages go through pickle, as on the bridge."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from gre.batching.scheduler import Completed
from gre.http import bridge
from gre.http.bridge_answers import (
    KEPT_LABELS,
    AnswerBook,
    LabelsSent,
    crosses_as_prediction,
)
from gre.http.classify_exchange import success_headers
from gre.http.request_parts import server_timing
from gre.messages import Prediction
from gre.model.labels import AnswerEncoder, read_synset_words
from tests.support import shared

PREDICTION = Prediction((281, 285, 282), (0.7182817459106445, 0.25, 1e-07))


def completed(prediction: Prediction = PREDICTION) -> Completed:
    return Completed(prediction, 1.2345678, 23.4567891, 0.0123456, 7, "0@cpu")


class Bridge:
    """The primary's LabelsSent and a worker's AnswerBook, joined by pickled messages."""

    def __init__(self) -> None:
        self.labels = LabelsSent()
        self.book = AnswerBook()
        self.wire: list[tuple[Any, ...]] = []

    def write(self, message: tuple[Any, ...]) -> None:
        self.wire.append(pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))

    def answer(self, rid: int, encoder: AnswerEncoder, done: Completed) -> tuple[Any, ...]:
        """What the worker delivers for request ``rid``'s answer."""
        start = len(self.wire)
        self.labels.answer(self.write, rid, encoder, done, "req-1")
        delivered = []
        for message in self.wire[start:]:
            if message[0] == bridge.LABELS:
                self.book.learn(message)
            else:
                delivered.append(self.book.response(message))
        (response,) = delivered
        return response

    def kinds(self) -> list[str]:
        return [message[0] for message in self.wire]


@pytest.fixture(scope="module")
def synset_words() -> AnswerEncoder:
    return AnswerEncoder(read_synset_words(shared("data/ilsvrc12/synset_words.txt")))


def test_the_workers_answer_is_the_primarys_byte_for_byte(synset_words: AnswerEncoder) -> None:
    link = Bridge()
    kind, rid, status, headers, body = link.answer(3, synset_words, completed())
    content = synset_words.encode(PREDICTION)
    assert (kind, rid, status) == (bridge.RESPONSE, 3, 200)
    assert body == content
    assert headers == success_headers(server_timing(completed()), content, "req-1")
    assert body.startswith(b'[{"confidence":0.7182817459106445,"label":"n02123045 tabby')
    assert (b"server-timing", b"queue;dur=1.235, preprocess;dur=23.457, inference;dur=0.012") in (
        headers
    )


def test_the_answer_crosses_as_numbers_and_the_labels_once(synset_words: AnswerEncoder) -> None:
    link = Bridge()
    for rid in range(3):
        link.answer(rid, synset_words, completed())
    assert link.kinds() == [bridge.LABELS, bridge.ANSWER, bridge.ANSWER, bridge.ANSWER]
    answer = link.wire[1]
    assert answer[3:5] == (PREDICTION.indices, PREDICTION.confidences)
    assert b"tabby" not in pickle.dumps(answer)


def test_each_model_answers_with_its_own_labels() -> None:
    """A reload: the old and the new model answer side by side, each with its labels."""
    old, new = AnswerEncoder(["cat", "dog"]), AnswerEncoder(["chat", "chien"])
    link = Bridge()
    one = Prediction((1,), (0.5,))
    assert link.answer(1, old, completed(one))[4] == b'[{"confidence":0.5,"label":"dog"}]'
    assert link.answer(2, new, completed(one))[4] == b'[{"confidence":0.5,"label":"chien"}]'
    assert link.answer(3, old, completed(one))[4] == b'[{"confidence":0.5,"label":"dog"}]'
    assert link.kinds().count(bridge.LABELS) == 2


def test_a_worker_keeps_the_newest_labels_and_is_sent_older_ones_again() -> None:
    encoders = [AnswerEncoder([f"model {n}"]) for n in range(KEPT_LABELS + 1)]
    link = Bridge()
    one = Prediction((0,), (1.0,))
    for rid, encoder in enumerate(encoders):
        link.answer(rid, encoder, completed(one))
    first_key = link.wire[0][1]
    assert link.wire[-2][3] == first_key  # the fifth model's labels drop the first's
    # Answered 500 rather than left waiting, should the primary ever name them again.
    forgotten = (bridge.ANSWER, 9, first_key, (0,), (1.0,), 0.0, 0.0, 0.0, "r-9")
    kind, rid, status, headers, body = link.book.response(forgotten)
    assert (kind, rid, status) == (bridge.RESPONSE, 9, 500)
    assert b'"error":"internal"' in body
    assert (b"x-request-id", b"r-9") in headers
    assert link.answer(9, encoders[0], completed(one))[4] == (
        b'[{"confidence":1.0,"label":"model 0"}]'
    )
    assert link.kinds()[-2:] == [bridge.LABELS, bridge.ANSWER]


@pytest.mark.parametrize("labels", [["a"], None])
def test_a_class_without_a_label_answers_its_number_as_in_the_primary(
    labels: list[str] | None,
) -> None:
    link = Bridge()
    beyond = Prediction((5, 0), (0.5, 0.25))
    body = link.answer(1, AnswerEncoder(labels), completed(beyond))[4]
    assert body == AnswerEncoder(labels).encode(beyond)
    assert body.startswith(b'[{"confidence":0.5,"label":"5"}')


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_confidence_that_is_no_json_does_not_cross(value: float) -> None:
    assert crosses_as_prediction(PREDICTION)
    assert not crosses_as_prediction(Prediction((0, 1), (0.5, value)))
