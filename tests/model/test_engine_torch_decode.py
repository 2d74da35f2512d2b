"""preprocess.decode = "gpu": the torch engine's batched JPEG decode, run on the CPU here
(torchvision's libjpeg-turbo), where its crops must be the host pipeline's bytes exactly."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from gre.config import PreprocessConfig
from gre.messages import Device, ItemError, Outcome, Prediction
from gre.model.classifier import Classifier
from gre.model.engines import EngineError, load_engine
from gre.model.engines.null import NullEngine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Pixels, Preprocessor
from tests.model.test_engine_parity import model_files
from tests.model.test_engine_torch import require_torch
from tests.model.test_imaging import imagecodecs_jpeg
from tests.model.test_jpeg_layout import with_orientation
from tests.support import distinct_jpegs, running_server, shared, shared_image


def preprocessor(**settings: Any) -> Preprocessor:
    return Preprocessor.build(PreprocessConfig(**settings), (3, 224, 224))


def decoder(pre: Preprocessor) -> Any:
    torch = require_torch()
    from gre.model.engines.torch_decode import DeviceDecoder

    return DeviceDecoder(pre, torch.device("cpu"))


class HostSpy:
    """The classifier's host pipeline (Preprocessor.pixels of decode_bgr), counting what it
    was given."""

    def __init__(self, pre: Preprocessor) -> None:
        self.pre = pre
        self.seen: list[bytes] = []

    def __call__(self, images: Sequence[bytes]) -> tuple[Pixels, list[Outcome | None]]:
        self.seen.extend(images)
        rows: list[Pixels] = []
        outcomes: list[Outcome | None] = []
        for data in images:
            try:
                rows.append(self.pre.pixels(decode_bgr(data)))
                outcomes.append(None)
            except ValueError as exc:
                outcomes.append(ItemError("bad_image", str(exc)))
        shape = (len(rows), *self.pre.input_shape)
        return (np.stack(rows) if rows else np.empty(shape, np.uint8)), outcomes


def host_crops(pre: Preprocessor, images: Sequence[bytes]) -> np.ndarray:
    return np.stack([pre.pixels(decode_bgr(data)) for data in images])


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_photos_crop_to_the_host_pipelines_bytes(channel_order: str) -> None:
    pre = preprocessor(channel_order=channel_order)
    images = [shared(f"images/{n}").read_bytes() for n in ("cat.jpg", "cat_gray.jpg")]
    images += distinct_jpegs(6)
    host = HostSpy(pre)
    crops, outcomes = decoder(pre).crops(images, host)
    assert outcomes == [None] * len(images)
    assert host.seen == []  # every one decoded on the device
    assert crops.tensor.dtype.itemsize == 1
    assert tuple(crops.tensor.shape) == (8, 3, 224, 224)
    np.testing.assert_array_equal(crops.tensor.numpy(), host_crops(pre, images))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_as_opencv_does(orientation: int) -> None:
    # A crop of the cat that is not square, so that a wrong turn changes every pixel.
    image = np.ascontiguousarray(shared_image("images/cat.jpg")[20:320, 40:440])
    data = with_orientation(image, orientation, quality=95)
    pre = preprocessor(resize=[300, 260])
    crops, _ = decoder(pre).crops([data], HostSpy(pre))
    np.testing.assert_array_equal(crops.tensor.numpy(), host_crops(pre, [data]))


def test_what_the_device_cannot_decode_goes_to_the_host_in_order() -> None:
    cat = shared_image("images/cat.jpg")
    jpeg = shared("images/cat.jpg").read_bytes()
    png = cv2.imencode(".png", cat)[1].tobytes()
    cmyk = io.BytesIO()
    Image.fromarray(cat[..., ::-1].copy()).convert("CMYK").save(cmyk, "JPEG")
    lossless = imagecodecs_jpeg(cat[..., ::-1].copy(), lossless=True)
    corrupt = jpeg[: len(jpeg) // 3]  # a header the device takes, data it cannot decode
    images = [png, jpeg, cmyk.getvalue(), corrupt, lossless, b"not an image"]
    pre = preprocessor()
    host = HostSpy(pre)
    crops, outcomes = decoder(pre).crops(images, host)
    assert host.seen == [png, cmyk.getvalue(), corrupt, lossless, b"not an image"]
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "NoneType", "NoneType", "NoneType", "ItemError", "NoneType", "ItemError"
    ]  # fmt: skip
    kept = [data for data, outcome in zip(images, outcomes, strict=True) if outcome is None]
    np.testing.assert_array_equal(crops.tensor.numpy(), host_crops(pre, kept))


def test_an_empty_batch_and_a_batch_of_nothing_decodable() -> None:
    pre = preprocessor()
    crops, outcomes = decoder(pre).crops([], HostSpy(pre))
    assert (len(crops), outcomes) == (0, [])
    crops, outcomes = decoder(pre).crops([b"\xff\xd8\xffjunk", b"junk"], HostSpy(pre))
    assert len(crops) == 0
    assert all(isinstance(o, ItemError) for o in outcomes)


@pytest.mark.parametrize(
    ("settings", "shape", "message"),
    [
        ({"resize_method": "caffe"}, (3, 224, 224), 'needs preprocess.resize_method = "opencv"'),
        ({"mean": [128.0]}, (1, 224, 224), "needs a net that takes 3 channels"),
    ],
)
def test_preprocessing_the_device_does_not_reproduce_is_refused(
    settings: dict[str, Any], shape: tuple[int, int, int], message: str
) -> None:
    pre = Preprocessor.build(PreprocessConfig(**settings), shape)
    with pytest.raises(EngineError, match=message):
        decoder(pre)


def test_classify_with_gpu_decode_answers_as_cpu_decode_on_open_nsfw() -> None:
    require_torch()
    from gre.config import load_config
    from gre.model.loader import load_model

    config = load_config(None)
    model = load_model(config)
    files = (config.model.deploy, config.model.weights)
    engine = load_engine("torch", *files, Device.cpu(), 2, None, 2)
    images = [shared("images/fish-bike.jpg").read_bytes(), b"junk", *distinct_jpegs(5)]
    on_cpu = Classifier(engine, model.preprocessor, False, 2, decode="cpu")
    on_device = Classifier(engine, model.preprocessor, False, 2, decode="gpu")
    assert on_device.decodes_on_device
    assert not on_cpu.decodes_on_device
    expected = on_cpu.classify(images, [2] * len(images)).outcomes
    got = on_device.classify(images, [2] * len(images)).outcomes
    assert got == expected  # the same bytes in, the same probabilities out
    assert isinstance(got[0], Prediction)
    assert isinstance(got[1], ItemError)


def test_features_batches_decode_on_the_host_with_gpu_decode() -> None:
    require_torch()
    deploy, weights = model_files("squeezenet_v1.1")
    engine = load_engine("torch", deploy, weights, Device.cpu(), 2, None, 1000)
    pre = preprocessor()
    classifier = Classifier(engine, pre, False, 2, decode="gpu")
    image = shared("images/cat.jpg").read_bytes()
    both = classifier.classify([image, image], [1, 1], [("prob",), ()]).outcomes
    alone = Classifier(engine, pre, False, 2).classify([image], [1], [("prob",)]).outcomes
    assert both[0] == alone[0]
    assert isinstance(both[1], Prediction)


def test_gpu_decode_with_an_engine_that_cannot_is_a_start_up_error() -> None:
    with pytest.raises(EngineError, match='needs engine = "torch"; the null engine decodes'):
        Classifier(NullEngine(2, Device.cpu()), preprocessor(), False, 1, decode="gpu")
    with pytest.raises(RuntimeError, match=r'needs preprocess\.decode = "gpu"$'):
        Classifier(NullEngine(2, Device.cpu()), preprocessor(), False, 1).prepare_crops([])


def test_a_server_with_gpu_decode_serves_what_cpu_decode_answers(tmp_path: Path) -> None:
    require_torch()
    from gre.config import load_config
    from gre.model.loader import load_model

    config = load_config(None)
    model = load_model(config)
    files = (config.model.deploy, config.model.weights)
    engine = load_engine("torch", *files, Device.cpu(), 2, None, 2)
    jpeg = shared("images/cat.jpg").read_bytes()
    png = cv2.imencode(".png", shared_image("images/fish-bike.jpg"))[1].tobytes()
    expected = Classifier(engine, model.preprocessor, False, 2).classify([jpeg, png], [2, 2])
    settings = ("--set", "engine=torch", "--set", "decode=gpu", "--set", "max_batch_size=4")
    with running_server(tmp_path, *settings) as server, server.client() as client:
        for data, outcome in zip((jpeg, png), expected.outcomes, strict=True):
            assert isinstance(outcome, Prediction)
            answer = client.post("/api/classify", content=data)
            assert answer.status_code == 200, answer.text
            got = [entry["confidence"] for entry in answer.json()]
            assert got == pytest.approx(list(outcome.confidences), abs=1e-7)
        refused = client.post("/api/classify", content=jpeg[:2000])
        assert refused.status_code == 400
        assert refused.json()["error"] == "bad_image"
        info = client.get("/api/model").json()
        assert info["engine"] == "torch", info
