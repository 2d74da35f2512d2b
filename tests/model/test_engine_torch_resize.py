"""resize_linear: cv2.resize INTER_LINEAR's bytes, in torch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.model.test_engine_torch import require_torch
from tests.support import shared_image

SIZES = [(256, 256), (227, 227), (224, 224), (300, 200)]


def cv2_and_torch(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    torch = require_torch()
    from gre.model.engines.torch_resize import resize_linear

    expected = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    got = resize_linear(chw, size).numpy().transpose(1, 2, 0)
    return expected, got


@pytest.mark.parametrize("name", ["cat.jpg", "fish-bike.jpg"])
@pytest.mark.parametrize("size", SIZES)
def test_photos_squash_to_cv2_bytes(name: str, size: tuple[int, int]) -> None:
    expected, got = cv2_and_torch(shared_image(f"images/{name}"), size)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "shape",
    [(37, 53), (100, 90), (255, 255), (256, 256), (300, 257), (512, 512), (512, 700), (1000, 700)],
)
@pytest.mark.parametrize("size", SIZES)
def test_random_images_up_and_down_match_cv2(shape: tuple[int, int], size: tuple[int, int]) -> None:
    seed = shape[0] * 7919 + shape[1]
    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected, got = cv2_and_torch(image, size)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(360, 480), (512, 512), (256, 256), (100, 90)])
def test_a_window_is_the_crop_of_the_whole(shape: tuple[int, int]) -> None:
    torch = require_torch()
    from gre.model.engines.torch_resize import resize_linear

    rng = np.random.default_rng(shape[0])
    image = torch.from_numpy(rng.integers(0, 256, (3, *shape), dtype=np.uint8))
    whole = resize_linear(image, (256, 256))
    window = resize_linear(image, (256, 256), (16, 16, 224, 224))
    np.testing.assert_array_equal(window.numpy(), whole[:, 16:240, 16:240].numpy())
    assert resize_linear(image, shape) is image  # already at the size: untouched
