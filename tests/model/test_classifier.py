import cv2
import numpy as np
import pytest

from gre.config import PreprocessConfig
from gre.messages import Device, ItemError, Prediction
from gre.model.classifier import Classifier
from gre.model.engines.null import NullEngine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Pixels, Preprocessor
from tests.support import shared, shared_image


class BrokenOnWide(Preprocessor):
    """A real preprocessor that raises as a library bug would, on images wider than 400 px."""

    def pixels(self, image: np.ndarray, out: Pixels | None = None) -> Pixels:
        if image.shape[1] > 400:
            raise RuntimeError("a bug in a library")
        return super().pixels(image, out)


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


@pytest.mark.parametrize("method", ["prepare", "prepare_pixels"])
def test_prepare_fills_the_batch_of_the_images_that_decode(
    classifier: Classifier, method: str
) -> None:
    """Each thread writes its image into the batch; failures leave no row (and no hole)."""

    def narrow(name: str, width: int) -> bytes:  # under 400 px: the bug does not fire
        return cv2.imencode(".jpg", shared_image(f"images/{name}")[:, :width])[1].tobytes()

    a, b, c = narrow("fish-bike.jpg", 390), narrow("cat.jpg", 300), narrow("cat_gray.jpg", 250)
    cat = shared("images/cat.jpg").read_bytes()  # 480 px wide: the bug fires
    images = [a, b"junk", b, cat, c]
    batch, errors = getattr(classifier, method)(images)
    assert [e is None for e in errors] == [True, False, True, False, True]
    pre = classifier.preprocessor
    one = pre.pixels if method == "prepare_pixels" else pre
    expected = np.stack([one(decode_bgr(data)) for data in (a, b, c)])
    assert batch.dtype == (np.uint8 if method == "prepare_pixels" else np.float32)
    np.testing.assert_array_equal(batch, expected)
    classifier.close()
