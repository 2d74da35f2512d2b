"""The replica process: loads the net on its device and classifies batches until told to stop.

Started by :class:`gre.replicas.replica.Replica` as
``python -c "from gre.replicas.worker import main; main()" FD [ARENA_FD]`` with FD one end of a
socketpair, it speaks the messages of :mod:`gre.messages`: it receives its
:class:`ReplicaSpec` and answers :class:`Ready` (after a warm-up forward) or
:class:`StartFailed`, then one :class:`BatchResult` or :class:`BatchFailed` per
:class:`BatchRequest`. End of input (the front end went away) or :class:`Stop` ends it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import traceback

import cv2
import numpy as np

from gre.config import PreprocessConfig
from gre.heap import freeze_startup_objects
from gre.messages import (
    BatchFailed,
    BatchRequest,
    Device,
    Ready,
    ReplicaSpec,
    SharedImages,
    StartFailed,
)
from gre.model.classifier import Classifier
from gre.model.engines import EngineError, load_engine
from gre.model.preprocess import Preprocessor
from gre.replicas import wire
from gre.replicas.arena import ArenaReader


def warm_up(classifier: Classifier, max_batch_size: int) -> int:
    """Run a zero batch of every power-of-two size up to ``max_batch_size``, largest first,
    so that no request pays for first-use costs (the opencv engine's net per size, Caffe's
    blob allocation, CUDA's kernels, the torch engine's cuDNN autotuning and CUDA graphs), as
    Triton's model warm-up; returns the class count.

    Raises:
        EngineError: a size ran out of memory (MemoryError, or torch's OutOfMemoryError on a
            GPU or the CPU); the message names the size and says to lower
            ``batching.max_batch_size``. Largest first, so this fails before any smaller size
            has taken memory.
    """
    shape = classifier.preprocessor.input_shape
    sizes = [1 << bit for bit in range(max_batch_size.bit_length() - 1, -1, -1)]
    for size in sizes:
        try:
            output = classifier.probabilities(np.zeros((size, *shape), dtype=np.float32))
        except _out_of_memory_errors() as exc:
            engine = classifier.engine
            raise EngineError(
                f"a batch of {size} does not fit in memory on {engine.device} ({engine.name} "
                f"engine, warm-up): set batching.max_batch_size below {size} (it is "
                f"{max_batch_size}); {type(exc).__name__}: {exc}"
            ) from exc
    if classifier.decodes_on_device:
        # nvJPEG's handles and buffers, and any error of the device decoder, at start-up.
        classifier.prepare_crops([warm_up_jpeg()] * max_batch_size)
    return int(output.shape[1])


def warm_up_jpeg() -> bytes:
    """A 16 x 16 baseline JPEG (mid-gray) for the device decoder's warm-up."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, dtype=np.uint8))
    assert ok
    return bytes(encoded)


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """MemoryError, and torch's OutOfMemoryError (a RuntimeError, raised by its CUDA and CPU
    allocators) when an engine has imported torch; torch is not imported for the others."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (MemoryError,) if oom is None else (MemoryError, oom)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size now, bytes (``/proc/self/statm``'s second field, as
    ``ps``' RSS); 0 where ``/proc`` is absent."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return 0


def serve(sock: socket.socket, arena: ArenaReader | None = None) -> int:
    """Run the replica protocol on ``sock``, reading batches the front end put in ``arena``
    from there; returns the process exit status."""
    spec: ReplicaSpec = wire.recv(sock)
    try:
        # Inside the process the planned GPU is CUDA device 0 (CUDA_VISIBLE_DEVICES).
        device = Device.gpu(0) if spec.device.is_gpu else Device.cpu()
        engine = load_engine(
            spec.engine,
            spec.deploy,
            spec.weights,
            device,
            spec.threads,
            spec.output_blob,
            spec.num_classes,
            spec.precision,
        )
        preprocess = PreprocessConfig(**spec.preprocess)
        preprocessor = Preprocessor.build(preprocess, spec.input_shape)
        classifier = Classifier(
            engine, preprocessor, spec.apply_softmax, spec.decode_threads, preprocess.decode
        )
        num_classes = warm_up(classifier, spec.max_batch_size)
        blobs = tuple(classifier.blob_shapes().items())
    except Exception as exc:
        if not isinstance(exc, EngineError | ValueError | OSError):  # unforeseen: show where
            traceback.print_exc(file=sys.stderr)
        wire.send(sock, StartFailed(f"{type(exc).__name__}: {exc}"))
        return 1
    freeze_startup_objects("replica")  # the net, the engine and the warm-up's leftovers
    wire.send(sock, Ready(os.getpid(), engine.name, engine.device, num_classes, blobs))
    while True:
        try:
            message = wire.recv(sock)
        except (EOFError, ConnectionError):
            return 0
        if not isinstance(message, BatchRequest):  # Stop
            return 0
        images = message.images
        try:
            if isinstance(images, SharedImages):
                if arena is None:
                    raise RuntimeError("a batch in the image arena, but this replica has none")
                images = arena.images(images)
            result = classifier.classify(images, message.top_ks, message.blobs)
            # The front end replaces a replica past replicas.max_rss_mb between batches.
            wire.send(sock, dataclasses.replace(result, rss_bytes=resident_bytes()))
        except Exception as exc:  # the engine failed on this batch; the replica lives on
            traceback.print_exc(file=sys.stderr)
            wire.send(sock, BatchFailed(f"{type(exc).__name__}: {exc}"))


def main() -> None:
    """Entry point of the replica process; ``sys.argv[1]`` is the socket's file descriptor,
    ``sys.argv[2]`` (optional) the image arena's (:mod:`gre.replicas.arena`)."""
    # The front end owns Ctrl-C and SIGTERM: it drains, then tells replicas to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    arena = ArenaReader(int(sys.argv[2])) if len(sys.argv) > 2 else None
    sys.exit(serve(sock, arena))
