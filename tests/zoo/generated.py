"""Files the zoo's tests serve, made on the spot (tarballs, Caffe mean BlobProtos), and a small
manifest of them: model ``tiny`` with two downloads and two archive members."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import numpy as np

from gre.model.meanfile import _BlobProto
from tests.zoo.fileserver import Files


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def tarball(members: dict[str, bytes], prefix: str = "./") -> bytes:
    """A .tar.gz of ``members`` (name to bytes), each named ``prefix + name`` as ``tar -czf
    x.tar.gz .`` would."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def mean_binaryproto(shape: tuple[int, ...]) -> bytes:
    """A Caffe mean BlobProto (legacy num/channels/height/width fields, as Caffe's
    compute_image_mean writes) of ``(1, *shape)`` seeded values."""
    blob = _BlobProto()
    blob.num, blob.channels, blob.height, blob.width = 1, *shape
    values = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    blob.data.extend(values.ravel().tolist())
    data: bytes = blob.SerializeToString()
    return data


DEPLOY = b'name: "tiny"\ninput: "data"\n'
WEIGHTS = bytes(range(256)) * 300
WORDS = b"n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
MEAN = mean_binaryproto((3, 4, 4))
AUX = tarball({"synset_words.txt": WORDS, "mean.binaryproto": MEAN, "train.txt": b"x"})

FILES = {
    "deploy.prototxt": DEPLOY,
    "tiny.caffemodel": WEIGHTS,
    "synset_words.txt": WORDS,
    "imagenet_mean.binaryproto": MEAN,
}


def manifest_data(base: str, words_sha1: str = sha1(WORDS)) -> dict[str, Any]:
    """A manifest of two models, ``tiny`` (two downloads, two members) and ``words`` (one
    member of the same archive), served from ``base``."""
    return {
        "archives": {"aux": {
            "url": f"{base}/dl/aux.tar.gz", "size": len(AUX),
            "members": {"synset_words.txt": {"sha1": words_sha1, "size": len(WORDS)},
                        "mean.binaryproto": {"mean_shape": [3, 4, 4]}},
        }},
        "models": {
            "tiny": {"description": "a tiny net", "files": {
                "deploy.prototxt": {"url": f"{base}/gh/deploy.prototxt", "sha1": sha1(DEPLOY),
                                    "size": len(DEPLOY)},
                "tiny.caffemodel": {"url": f"{base}/dl/tiny.caffemodel", "sha1": sha1(WEIGHTS)},
                "synset_words.txt": {"archive": "aux"},
                "imagenet_mean.binaryproto": {"archive": "aux", "member": "mean.binaryproto"},
            }},
            "words": {"files": {"synset_words.txt": {"archive": "aux"}}},
        },
    }  # fmt: skip


def serve_origin(server: Files) -> None:
    server.content.update({
        "/gh/deploy.prototxt": DEPLOY, "/dl/tiny.caffemodel": WEIGHTS, "/dl/aux.tar.gz": AUX,
    })  # fmt: skip
