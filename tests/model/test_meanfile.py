from pathlib import Path

import numpy as np
import pytest

from gre.model.meanfile import MeanFileError, _BlobProto, blob_proto_to_array, load_mean
from tests.support import shared


def write_binaryproto(path: Path, mean: np.ndarray, legacy: bool) -> None:
    blob = _BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    else:
        blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy", [True, False])
def test_binaryproto_roundtrip(tmp_path: Path, legacy: bool) -> None:
    mean = np.random.default_rng(0).uniform(0, 255, (3, 8, 6)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    write_binaryproto(path, mean, legacy)
    np.testing.assert_array_equal(load_mean(path), mean)


def test_ilsvrc12_mean_npy() -> None:
    mean = load_mean(shared("data/ilsvrc12/ilsvrc_2012_mean.npy"))
    assert mean.shape == (3, 256, 256)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(1, 2)), [104.0, 116.7, 122.7], atol=0.1)


def test_not_a_blobproto() -> None:
    with pytest.raises(MeanFileError):
        blob_proto_to_array(b"\xff\xff\xff not protobuf")


def test_shape_and_data_disagree(tmp_path: Path) -> None:
    blob = _BlobProto()
    blob.shape.dim.extend([3, 2, 2])
    blob.data.extend([1.0] * 5)
    with pytest.raises(MeanFileError, match="does not match"):
        blob_proto_to_array(blob.SerializeToString())


def test_npy_of_wrong_rank(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(MeanFileError, match=r"\(C, H, W\) or \(C,\)"):
        load_mean(tmp_path / "m.npy")
