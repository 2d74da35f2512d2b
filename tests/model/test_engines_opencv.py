from pathlib import Path

import cv2
import numpy as np
import pytest

from gre.config import load_config
from gre.messages import Device
from gre.model.engines import EngineError
from gre.model.engines.opencv import OpenCVEngine, opencv_reads_caffe, power_of_two_chunks
from gre.offline import build_classifier
from tests.support import distinct_jpegs


@pytest.mark.parametrize(
    ("n", "chunks"),
    [(0, []), (1, [1]), (2, [2]), (13, [8, 4, 1]), (32, [32]), (31, [16, 8, 4, 2, 1])],
)
def test_power_of_two_chunks(n: int, chunks: list[int]) -> None:
    assert power_of_two_chunks(n) == chunks
    assert sum(chunks) == n


def test_any_batch_size_answers_as_images_one_by_one() -> None:
    """Batches run as power-of-two chunks on nets of their own; each row must still be its
    image's, in order, whatever sizes came before."""
    classifier = build_classifier(load_config(None, {"engine": "opencv"}))
    engine = classifier.engine
    assert isinstance(engine, OpenCVEngine)
    batch, _ = classifier.prepare(distinct_jpegs(13))
    singles = np.concatenate([engine.forward(batch[i : i + 1]) for i in range(13)])
    for size in (13, 3, 8, 5):  # sizes changing from batch to batch, as a dynamic batcher's
        np.testing.assert_allclose(engine.forward(batch[:size]), singles[:size], atol=1e-5)
    classifier.close()


def test_an_opencv_without_the_caffe_importer_is_refused_in_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenCV 5 has no cv2.dnn.readNetFromCaffe (seen on a GPU machine's image): the engine
    says so and what to install, instead of an AttributeError at the first batch."""
    monkeypatch.delattr(cv2.dnn, "readNetFromCaffe")
    assert not opencv_reads_caffe()
    with pytest.raises(
        EngineError, match=r"no Caffe importer .* opencv-python-headless >= 4.8, < 5"
    ):
        OpenCVEngine(Path("deploy.prototxt"), Path("net.caffemodel"), Device.cpu(), 0, None)
