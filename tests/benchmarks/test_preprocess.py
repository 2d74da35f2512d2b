"""benchmarks.preprocess: the plain crop is gre's crop, and a run prints both images' rows."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from benchmarks.data import shared_path
from benchmarks.preprocess import INPUT_SHAPE, main, transposed_crop
from gre.config import PreprocessConfig
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_the_plain_crop_is_the_preprocessors(channel_order: Literal["BGR", "RGB"]) -> None:
    pre = Preprocessor.build(PreprocessConfig(channel_order=channel_order), INPUT_SHAPE)
    image = decode_bgr(shared_path("images/cat.jpg").read_bytes())
    np.testing.assert_array_equal(transposed_crop(pre, image), pre.pixels(image))


def test_a_run_prints_each_step_for_both_images(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--repeat", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "input (3, 227, 227), resize (256, 256), 1 thread: us per image"
    assert lines[1].split() == ["image", "decode", "pixels", "plain", "ratio", "normalize"]
    assert len(lines) == 4
    for line, image in zip(lines[2:], ["16x16 JPEG", "cat.jpg"], strict=True):
        assert line.startswith(image)
        decode, pixels, plain, ratio, normalize = map(float, line[len(image) :].split())
        assert min(decode, pixels, plain, normalize) > 0
        # Each timing is printed to 0.05 us: the ratio, of the unrounded ones, lies within.
        low = (pixels - 0.05) / (plain + 0.05)
        high = (pixels + 0.05) / max(plain - 0.05, 1e-9)
        assert low - 0.005 <= ratio <= high + 0.005
