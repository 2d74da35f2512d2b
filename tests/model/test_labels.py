"""gre.model.labels: the answer's shape and its JSON encoder."""

import json
import math

import pytest

from gre.messages import Prediction
from gre.model.labels import AnswerEncoder, answer, read_synset_words
from tests.support import shared

#: Starlette's JSONResponse encoding, which AnswerEncoder must match byte for byte.
STARLETTE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "labels",
    [
        None,
        ["sfw", "nsfw"],
        ['a "quoted" \\ label', "tab\tnew\nline", "ünïcødé 猫", "\x00\x1f"],
    ],
)
def test_the_encoder_writes_starlettes_json_of_the_answer(labels: list[str] | None) -> None:
    encoder = AnswerEncoder(labels)
    count = len(labels or ()) or 3
    for confidences in [
        (0.6666666865348816, 0.3333333432674408, 0.0),
        (1.0, 5e-324, 1e-7),
        (0.1 + 0.2, 1e16, 123456789.125),
    ]:
        indices = tuple(range(count))[:3]
        prediction = Prediction(indices, confidences[: len(indices)])
        expected = STARLETTE.encode(answer(prediction, labels)).encode()
        assert encoder.encode(prediction) == expected


def test_the_encoder_answers_a_class_without_a_label_by_its_number() -> None:
    prediction = Prediction((1, 7), (0.5, 0.25))
    expected = STARLETTE.encode(answer(prediction, ["a", "b"])).encode()
    assert AnswerEncoder(["a", "b"]).encode(prediction) == expected
    assert b'"label":"7"' in expected


def test_the_encoder_refuses_nan_and_infinity_as_json_does() -> None:
    for value in (math.nan, math.inf, -math.inf):
        prediction = Prediction((0,), (value,))
        with pytest.raises(ValueError, match="not JSON compliant"):
            STARLETTE.encode(answer(prediction, None))
        with pytest.raises(ValueError, match="not JSON compliant"):
            AnswerEncoder(None).encode(prediction)


def test_the_encoder_on_the_ilsvrc12_synset_words() -> None:
    labels = read_synset_words(shared("data/ilsvrc12/synset_words.txt"))
    prediction = Prediction((281, 282, 285, 0, 999), (0.5, 0.2, 0.1, 0.01, 1e-9))
    expected = STARLETTE.encode(answer(prediction, labels)).encode()
    assert AnswerEncoder(labels).encode(prediction) == expected
