import cv2
import numpy as np
import pytest

from gre.config import PreprocessConfig
from gre.messages import Device, ItemError, Prediction
from gre.model.classifier import Classifier, top_k, top_k_rows
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


def stable_top(row: np.ndarray, k: int) -> Prediction:
    """The reference: a stable descending argsort of the whole row, then its first ``k``."""
    order = np.argsort(-row, kind="stable")[:k]
    return Prediction(tuple(map(int, order)), tuple(map(float, row[order])))


def test_top_k_rows_sorts_the_batch_once_as_top_k_sorts_each_row() -> None:
    rng = np.random.default_rng(7)
    rows = rng.random((5, 1000), dtype=np.float32)
    rows[2] = 0.0  # all tied: the lowest indices first
    rows[3, [10, 20, 30]] = 1.0  # a tie at the top
    ks = [5, 1, 3, 2, 1000]
    got = top_k_rows(rows, ks)
    assert got[2] == Prediction((0, 1, 2), (0.0, 0.0, 0.0))
    assert got[3].indices == (10, 20)
    for row, k, prediction in zip(rows, ks, got, strict=True):
        assert prediction == stable_top(row, k)
        assert prediction == top_k(row, k)
    assert top_k_rows(np.empty((0, 3), np.float32), []) == []


@pytest.mark.parametrize(
    "case",
    ["distinct", "tie_inside", "tie_on_the_edge", "nan_on_top", "nan_below", "negative_zero"],
)
def test_top_k_rows_partition_gives_the_full_stable_sorts_answer(case: str) -> None:
    """The partition path (k well under the classes) and its fall-back to the full sort agree
    with a stable argsort on every kind of row a net can give."""
    rng = np.random.default_rng(11)
    rows = rng.random((4, 1000), dtype=np.float32) * 0.5
    if case == "tie_inside":  # tied, all among the top 5
        rows[1, [3, 900, 40]] = 0.9
    if case == "tie_on_the_edge":  # 4 tied for places 4 and 5: the lowest two indices win
        rows[2, [7, 8]] = [0.99, 0.98]
        rows[2, [10]] = 0.97
        rows[2, [950, 600, 20, 300]] = 0.96
    if case == "nan_on_top":
        rows[0, 5] = np.nan
    if case == "nan_below":  # a NaN sorts last: not among the top
        rows[3, 999] = np.nan
    if case == "negative_zero":  # -0.0 and 0.0 tie, as the sort compares them
        rows[1] = 0.0
        rows[1, [500, 2]] = -0.0
        rows[1, 700] = 1.0
    ks = [5, 1, 5, 3]
    got = top_k_rows(rows, ks)
    for row, k, prediction in zip(rows, ks, got, strict=True):
        expected = stable_top(row, k)
        assert prediction.indices == expected.indices
        np.testing.assert_array_equal(prediction.confidences, expected.confidences)
    if case == "tie_on_the_edge":
        assert got[2].indices == (7, 8, 10, 20, 300)


def test_top_k_rows_of_a_features_only_batch_is_empty_predictions() -> None:
    """top_k 0 for every image (features requests): no classes, and no error."""
    rows = np.random.default_rng(5).random((3, 1000), dtype=np.float32)
    assert top_k_rows(rows, [0, 0, 0]) == [Prediction((), ())] * 3


def test_top_k_rows_agrees_with_the_full_sort_on_many_batches() -> None:
    rng = np.random.default_rng(3)
    for trial in range(60):
        rows = rng.random((16, 1000), dtype=np.float32)
        if trial % 2:
            rows = (np.round(rows * 40) / 40).astype(np.float32)  # ties everywhere
        ks = [int(k) for k in rng.integers(1, 80, 16)]
        assert top_k_rows(rows, ks) == [stable_top(r, k) for r, k in zip(rows, ks, strict=True)]


def test_a_batch_decoded_across_threads_keeps_each_image_in_its_place() -> None:
    """The calling thread and the pool take images as they finish; results keep their place."""
    pre = Preprocessor.build(PreprocessConfig(), (3, 224, 224))
    classifier = Classifier(NullEngine(2, Device.cpu()), pre, False, decode_threads=3)
    images = [
        cv2.imencode(".png", shared_image("images/cat.jpg")[: 20 + i, : 30 + i])[1].tobytes()
        for i in range(9)
    ]
    batch, errors = classifier.prepare_pixels(images)
    classifier.close()
    assert errors == [None] * 9
    for data, row in zip(images, batch, strict=True):
        np.testing.assert_array_equal(row, pre.pixels(decode_bgr(data)))


def test_opencvs_own_threads_are_off_while_decoding_and_restored_after() -> None:
    """The decode threads are the parallelism: OpenCV's pool splitting each resize again
    only costs CPU; the OpenCV engine's forward gets its threads back."""
    seen: list[int] = []

    class Recording(Preprocessor):
        def pixels(self, image: np.ndarray, out: Pixels | None = None) -> Pixels:
            seen.append(cv2.getNumThreads())
            return super().pixels(image, out)

    pre = Recording.build(PreprocessConfig(), (3, 224, 224))
    classifier = Classifier(NullEngine(2, Device.cpu()), pre, False, decode_threads=2)
    image = cv2.imencode(".jpg", shared_image("images/cat.jpg"))[1].tobytes()
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        classifier.classify([image] * 4, [1] * 4)
        assert seen == [1, 1, 1, 1]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
        classifier.close()
