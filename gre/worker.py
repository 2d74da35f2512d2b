"""The replica process: loads the net on its device and classifies batches until told to stop.

Started by :class:`gre.replica.Replica` as ``python -c "from gre.worker import main; main()" FD``
with FD one end of a
socketpair. The first message it receives is its :class:`ReplicaSpec`; it answers
:class:`Ready` (after a warm-up forward) or :class:`Failed`, then one :class:`BatchResult` or
:class:`BatchFailed` per batch of encoded images. End of input (the front end went away) or
``None`` stops it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gre import wire
from gre.classifier import Classifier
from gre.device import Device
from gre.engines import EngineError, load_engine
from gre.preprocess import Preprocessor


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica process needs; picklable.

    ``device`` is the device the front end planned (a GPU replica sees only that GPU, as
    CUDA device 0); ``threads`` are compute threads for a CPU replica.
    """

    index: int
    engine: str
    deploy: Path
    weights: Path
    output_blob: str | None
    apply_softmax: bool
    num_classes: int
    device: Device
    threads: int
    decode_threads: int
    preprocessor: Preprocessor
    #: The largest batch the scheduler will send (``batching.max_batch_size``).
    max_batch_size: int = 1

    @property
    def name(self) -> str:
        """``"<index>@<device>"``, e.g. ``"0@cpu"``: the replica's name in logs and metrics."""
        return f"{self.index}@{self.device}"


@dataclass(frozen=True)
class Ready:
    """The replica loaded its net and ran a warm-up batch."""

    pid: int
    engine: str
    device: str
    num_classes: int


@dataclass(frozen=True)
class Failed:
    """The replica could not start; ``message`` says why."""

    message: str


@dataclass(frozen=True)
class BatchFailed:
    """The forward pass failed for a whole batch; ``message`` says why."""

    message: str


def warm_up(classifier: Classifier, max_batch_size: int) -> int:
    """Run a zero batch of every power-of-two size up to ``max_batch_size``, largest first,
    so that no request pays for first-use costs (the opencv engine's net per size, Caffe's
    blob allocation, CUDA's kernels), as Triton's model warm-up; returns the class count."""
    shape = classifier.preprocessor.input_shape
    sizes = [1 << bit for bit in range(max_batch_size.bit_length() - 1, -1, -1)]
    for size in sizes:
        output = classifier.probabilities(np.zeros((size, *shape), dtype=np.float32))
    return int(output.shape[1])


def serve(sock: socket.socket) -> int:
    """Run the replica protocol on ``sock``; returns the process exit status."""
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
        )
        classifier = Classifier(engine, spec.preprocessor, spec.apply_softmax, spec.decode_threads)
        num_classes = warm_up(classifier, spec.max_batch_size)
    except Exception as exc:
        if not isinstance(exc, EngineError | ValueError | OSError):  # unforeseen: show where
            traceback.print_exc(file=sys.stderr)
        wire.send(sock, Failed(f"{type(exc).__name__}: {exc}"))
        return 1
    wire.send(sock, Ready(os.getpid(), engine.name, engine.device, num_classes))
    while True:
        try:
            message = wire.recv(sock)
        except (EOFError, ConnectionError):
            return 0
        if message is None:
            return 0
        images, top_ks = message
        try:
            wire.send(sock, classifier.classify(images, top_ks))
        except Exception as exc:  # the engine failed on this batch; the replica lives on
            traceback.print_exc(file=sys.stderr)
            wire.send(sock, BatchFailed(f"{type(exc).__name__}: {exc}"))


def main() -> None:
    """Entry point of the replica process; ``sys.argv[1]`` is the socket's file descriptor."""
    # The front end owns Ctrl-C and SIGTERM: it drains, then tells replicas to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    sys.exit(serve(sock))
