import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gre.config import ConfigError, PreprocessConfig, load_config
from gre.model.preprocess import PreprocessConfigError, Preprocessor, caffe_resize, crop_offset
from tests.support import shared, shared_image


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return shared_image("images/cat.jpg")


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


def test_resize_method_defaults_to_opencv_and_is_a_config_key(tmp_path: Path) -> None:
    assert PreprocessConfig().resize_method == "opencv"
    assert Preprocessor.build(PreprocessConfig(), (3, 224, 224)).resize_method == "opencv"
    toml = tmp_path / "gre.toml"
    toml.write_text('[preprocess]\nresize_method = "caffe"\n')
    assert load_config(toml, {}).preprocess.resize_method == "caffe"
    assert load_config(None, {"GRE_RESIZE_METHOD": "caffe"}).preprocess.resize_method == "caffe"
    with pytest.raises(ConfigError, match="resize_method"):
        load_config(None, {}, {"resize_method": "area"})


def test_caffe_resize_method_is_picklable_and_differs_only_in_the_resize(cat: np.ndarray) -> None:
    config = PreprocessConfig(resize_method="caffe")
    pre = pickle.loads(pickle.dumps(Preprocessor.build(config, (3, 224, 224))))
    assert pre.resize_method == "caffe"
    blob = pre(cat)
    resized = caffe_resize(cat, (256, 256))
    mean = np.array([104, 117, 123], np.float32)[:, None, None]
    expected = resized[16:240, 16:240].transpose(2, 0, 1) - mean
    np.testing.assert_allclose(blob, expected, atol=1e-4)
    default = Preprocessor.build(PreprocessConfig(), (3, 224, 224))(cat)
    # Anti-aliasing: the caffe method is smoother, so they differ, but by a few levels at most
    # on average (docs/fidelity.md).
    assert 0.05 < np.abs(blob - default).mean() < 2.0


def test_caffe_resize_method_without_a_resize_is_the_default_path(cat: np.ndarray) -> None:
    image = np.asarray(cv2.resize(cat, (256, 256), interpolation=cv2.INTER_AREA), np.uint8)
    for shape in [(3, 227, 227), (1, 224, 224)]:
        default = Preprocessor.build(PreprocessConfig(mean=[128.0] * shape[0]), shape)(image)
        config = PreprocessConfig(mean=[128.0] * shape[0], resize_method="caffe")
        np.testing.assert_array_equal(Preprocessor.build(config, shape)(image), default)


def test_caffe_resize_shapes_and_constant_images() -> None:
    ramp = np.tile(np.arange(100, dtype=np.uint8), (80, 1))
    assert caffe_resize(ramp, (40, 50)).shape == (40, 50)
    assert caffe_resize(ramp[:, :, None], (40, 50)).shape == (40, 50, 1)
    flat = caffe_resize(np.full((30, 20, 3), 9, np.uint8), (60, 10))
    assert flat.shape == (60, 10, 3)
    assert flat.dtype == np.float32
    assert (flat == 9).all()
    # Downsampling a ramp by 2 on the half-pixel grid: interior samples average pixel pairs.
    half = caffe_resize(ramp.astype(np.float32), (80, 50))
    np.testing.assert_allclose(half[:, 5:45], np.tile(np.arange(10.5, 90, 2), (80, 1)), atol=1e-4)


def test_caffe_resize_of_a_very_long_image_is_linear_time_and_agrees() -> None:
    from skimage.transform import resize

    # Shrinking 78x needs a 313-tap Gaussian, applied only at the taps. The reference is what
    # caffe.io.resize_image runs: skimage's resize of the image scaled to [0, 1].
    noise = np.random.default_rng(5).integers(0, 256, (30, 20000, 3)).astype(np.uint8)
    low, high = float(noise.min()), float(noise.max())
    scaled = (noise - low) / (high - low)
    resized = resize(scaled, (256, 256), order=1, mode="constant")  # type: ignore[no-untyped-call]
    expected = resized * (high - low) + low
    assert np.abs(caffe_resize(noise, (256, 256)) - expected).max() < 1e-4
    # A 1,000,000 x 8 image (a 5 KB PNG) took hours when the whole axis was filtered; the
    # bound only catches a hang.
    start = time.perf_counter()
    long = caffe_resize(np.random.default_rng(6).integers(0, 256, (8, 1_000_000)), (256, 256))
    assert long.shape == (256, 256)
    assert time.perf_counter() - start < 60


def old_arithmetic(pre: Preprocessor, pixels: np.ndarray) -> np.ndarray:
    """caffe.io.Transformer's steps as gre ran them per image before crops went to engines
    as uint8: a float32 copy, then each step in place."""
    blob = pixels.astype(np.float32)
    if pre.raw_scale != 255.0:
        blob *= np.float32(pre.raw_scale / 255.0)
    if pre.mean is not None:
        blob -= pre.mean
    if pre.input_scale != 1.0:
        blob *= np.float32(pre.input_scale)
    return blob


ARITHMETIC_CASES = {
    "pixel mean": (PreprocessConfig(), (3, 224, 224)),
    "scales, RGB": (
        PreprocessConfig(
            mean=[1.0, 2.0, 3.0], raw_scale=1.0, input_scale=0.017, channel_order="RGB"
        ),
        (3, 227, 227),
    ),
    "no mean": (PreprocessConfig(mean=None, input_scale=0.5), (3, 32, 32)),
    "nothing": (PreprocessConfig(mean=None), (3, 32, 32)),
    "gray": (PreprocessConfig(mean=[128.0]), (1, 28, 28)),
    "caffe resize": (PreprocessConfig(resize_method="caffe", input_scale=2.0), (3, 64, 64)),
}


@pytest.mark.parametrize("case", sorted(ARITHMETIC_CASES))
def test_pixels_then_normalization_is_the_blob_bit_for_bit(case: str, cat: np.ndarray) -> None:
    config, shape = ARITHMETIC_CASES[case]
    pre = Preprocessor.build(config, shape)
    pixels = pre.pixels(cat)
    assert pixels.shape == shape
    assert pixels.dtype == pre.pixel_dtype
    assert pixels.dtype == (np.float32 if config.resize_method == "caffe" else np.uint8)
    expected = old_arithmetic(pre, pixels)
    np.testing.assert_array_equal(pre(cat), expected)
    # Over a batch at once (the mean broadcasts over N), and into a given buffer.
    batch = np.stack([pixels, pre.pixels(cat[::-1].copy())])
    out = np.full(batch.shape, np.nan, np.float32)
    assert pre.normalization.apply(batch, out=out) is out
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], old_arithmetic(pre, batch[1]))


def test_pixels_write_into_a_batch_slot(cat: np.ndarray) -> None:
    pre = Preprocessor.build(PreprocessConfig(), (3, 224, 224))
    batch = np.zeros((2, 3, 224, 224), np.uint8)
    slot = batch[1]
    assert pre.pixels(cat, slot) is slot
    np.testing.assert_array_equal(batch[1], pre.pixels(cat))
    assert not batch[0].any()


def reference_pixels(pre: Preprocessor, image: np.ndarray) -> np.ndarray:
    """:meth:`Preprocessor.pixels` step by step: squash, crop, NumPy's transpose (or gray)."""
    channels, height, width = pre.input_shape
    squashed: np.ndarray
    if pre.resize_method == "caffe":
        squashed = caffe_resize(image, pre.resize)
    else:
        squashed = cv2.resize(image, pre.resize[::-1], interpolation=cv2.INTER_LINEAR)
    top, left = crop_offset(pre.resize[0], height), crop_offset(pre.resize[1], width)
    cropped = squashed[top : top + height, left : left + width]
    if channels == 1:
        return np.asarray(cv2.cvtColor(cropped, cv2.COLOR_BGR2GRAY))[None]
    chw = cropped.transpose(2, 0, 1)
    return np.ascontiguousarray(chw[::-1] if pre.rgb else chw)


@pytest.mark.parametrize("case", sorted(ARITHMETIC_CASES))
@pytest.mark.parametrize("into", ["new", "batch slot", "strided", "another dtype"])
def test_pixels_are_the_transposed_crop_whatever_the_out(
    case: str, into: str, cat: np.ndarray
) -> None:
    # cv2.split and cvtColor write into the out's planes when they can, and allocate their own
    # (then copied) when they cannot: every out gets the same pixels.
    config, shape = ARITHMETIC_CASES[case]
    pre = Preprocessor.build(config, shape)
    expected = reference_pixels(pre, cat)
    channels, height, width = shape
    out: np.ndarray | None = None
    if into == "batch slot":
        out = np.zeros((3, *shape), pre.pixel_dtype)[1]
    elif into == "strided":  # every other column of a wider array: no plane is contiguous
        out = np.zeros((channels, height, 2 * width), pre.pixel_dtype)[:, :, ::2]
    elif into == "another dtype":
        out = np.zeros(shape, np.float64)
    pixels = pre.pixels(cat, out)
    if out is not None:
        assert pixels is out
    np.testing.assert_array_equal(pixels, expected)
