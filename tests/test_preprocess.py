from pathlib import Path

import cv2
import numpy as np
import pytest

from gre.config import PreprocessConfig
from gre.preprocess import PreprocessConfigError, Preprocessor, crop_offset
from tests.support import shared


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return cv2.imread(str(shared("images/cat.jpg")), cv2.IMREAD_COLOR)


def reference(image: np.ndarray, resize: tuple[int, int], crop: tuple[int, int]) -> np.ndarray:
    """Squash, centre-crop, HWC->CHW with plain OpenCV/NumPy, step by step."""
    resized = cv2.resize(image, resize[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
    top, left = (resize[0] - crop[0]) // 2, (resize[1] - crop[1]) // 2
    return resized[top : top + crop[0], left : left + crop[1]].transpose(2, 0, 1)


def test_open_nsfw_convention(cat: np.ndarray) -> None:
    pre = Preprocessor.build(PreprocessConfig(), (3, 224, 224))
    blob = pre(cat)
    expected = (
        reference(cat, (256, 256), (224, 224))
        - np.array([104, 117, 123], np.float32)[:, None, None]
    )
    assert blob.shape == (3, 224, 224)
    assert blob.dtype == np.float32
    np.testing.assert_allclose(blob, expected, atol=1e-4)


def test_squash_to_input_rgb_and_scales(cat: np.ndarray) -> None:
    config = PreprocessConfig(
        resize="input", crop="none", mean=[1.0, 2.0, 3.0], raw_scale=1.0,
        input_scale=0.017, channel_order="RGB",
    )  # fmt: skip
    blob = Preprocessor.build(config, (3, 227, 227))(cat)
    rgb = reference(cat, (227, 227), (227, 227))[::-1]
    expected = (rgb / 255.0 - np.array([1, 2, 3], np.float32)[:, None, None]) * 0.017
    np.testing.assert_allclose(blob, expected, atol=1e-5)


def test_mean_image_is_cropped_at_the_image_window(tmp_path: Path, cat: np.ndarray) -> None:
    mean = np.random.default_rng(1).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    config = PreprocessConfig(mean=tmp_path / "mean.npy", mean_mode="image")
    blob = Preprocessor.build(config, (3, 227, 227))(cat)
    o = crop_offset(256, 227)
    expected = reference(cat, (256, 256), (227, 227)) - mean[:, o : o + 227, o : o + 227]
    np.testing.assert_allclose(blob, expected, atol=1e-4)


def test_pixel_mode_averages_a_mean_image(cat: np.ndarray) -> None:
    config = PreprocessConfig(mean=shared("data/ilsvrc12/ilsvrc_2012_mean.npy"), mean_mode="pixel")
    pre = Preprocessor.build(config, (3, 227, 227))
    assert pre.mean is not None
    assert pre.mean.shape == (3, 1, 1)
    np.testing.assert_allclose(pre.mean.ravel(), [104.0, 116.7, 122.7], atol=0.1)


def test_single_channel_net(cat: np.ndarray) -> None:
    blob = Preprocessor.build(PreprocessConfig(mean=[128.0]), (1, 28, 28))(cat)
    assert blob.shape == (1, 28, 28)


def test_crop_offsets_match_caffe() -> None:
    # caffe.Classifier: int(size / 2 - crop / 2); Caffe's data layer: (size - crop) / 2.
    for size, crop in [(256, 224), (256, 227), (255, 224), (227, 227)]:
        assert crop_offset(size, crop) == int(size / 2.0 - crop / 2.0) == (size - crop) // 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PreprocessConfig(resize=(200, 200)), "smaller than the net input"),
        (PreprocessConfig(crop="none"), "differs from the net input"),
        (PreprocessConfig(mean=[1.0, 2.0]), "2 channels"),
        (PreprocessConfig(mean_mode="image"), "needs a mean image file"),
    ],
)
def test_settings_that_cannot_fit(config: PreprocessConfig, message: str) -> None:
    with pytest.raises(PreprocessConfigError, match=message):
        Preprocessor.build(config, (3, 224, 224))
