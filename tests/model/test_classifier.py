import cv2
import numpy as np
import pytest

from gre.config import PreprocessConfig
from gre.messages import Device, ItemError, Prediction
from gre.model.classifier import Classifier
from gre.model.engines.null import NullEngine
from gre.model.preprocess import Blob, Preprocessor
from tests.support import shared, shared_image


class BrokenOnWide(Preprocessor):
    """A real preprocessor that raises as a library bug would, on images wider than 400 px."""

    def __call__(self, image: np.ndarray) -> Blob:
        if image.shape[1] > 400:
            raise RuntimeError("a bug in a library")
        return super().__call__(image)


@pytest.fixture
def classifier() -> Classifier:
    broken = BrokenOnWide.build(PreprocessConfig(), (3, 224, 224))
    assert isinstance(broken, BrokenOnWide)
    return Classifier(NullEngine(2, Device.cpu()), broken, False, decode_threads=2)


def test_an_unexpected_error_costs_one_image_not_its_batch(classifier: Classifier) -> None:
    cat = shared("images/cat.jpg").read_bytes()  # 480 px wide: the bug fires
    small = cv2.imencode(".png", shared_image("images/cat.jpg")[:, :300])[1].tobytes()
    result = classifier.classify([cat, small, b"not an image"], [1, 1, 1])
    broken, fine, bad = result.outcomes
    assert broken == ItemError("bad_image", "the image could not be decoded (RuntimeError)")
    assert isinstance(fine, Prediction)
    assert isinstance(bad, ItemError)
    assert bad.code == "bad_image"
    classifier.close()
