"""Every message that crosses the process boundary between the front end and a replica.

The front end sends a :class:`ReplicaSpec`, then :class:`BatchRequest` after
:class:`BatchRequest`, then :class:`Stop`; the replica answers :class:`Ready` or
:class:`StartFailed`, then one :class:`BatchResult` or :class:`BatchFailed` per batch.
They travel pickled (``gre.replicas.wire``), so each is a plain frozen dataclass of built-in
values. This module imports nothing else from gre: the scheduler, the HTTP layer and the
replica process can all speak it without depending on one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Device:
    """Where a replica runs: ``Device.cpu()`` or ``Device.gpu(i)`` for CUDA device ``i``."""

    kind: str  # "cpu" or "gpu"
    index: int = 0

    @classmethod
    def cpu(cls) -> Device:
        """The CPU."""
        return cls("cpu")

    @classmethod
    def gpu(cls, index: int) -> Device:
        """CUDA device ``index`` (as NVML numbers it)."""
        return cls("gpu", index)

    @property
    def is_gpu(self) -> bool:
        """Whether this is a GPU."""
        return self.kind == "gpu"

    def __str__(self) -> str:
        return f"gpu:{self.index}" if self.is_gpu else "cpu"


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica process needs to load its net: the first message it receives.

    ``device`` is the device the front end planned (a GPU replica sees only that GPU, as
    CUDA device 0); ``threads`` are compute threads for a CPU replica; ``preprocess`` is the
    ``[preprocess]`` section's values (``PreprocessConfig.model_dump()``), which the replica
    builds into its preprocessor for the net input ``input_shape`` ``(C, H, W)``.
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
    input_shape: tuple[int, int, int]
    preprocess: Mapping[str, Any]
    #: The largest batch the scheduler will send (``batching.max_batch_size``).
    max_batch_size: int = 1
    #: The most bytes of encoded images one batch carries (``batching.max_batch_bytes``): the
    #: size of the replica's image arena.
    max_batch_bytes: int = 32 * 2**20
    #: Which model load this replica belongs to: 1 at start-up, +1 per reload.
    generation: int = 1
    #: ``model.precision``: ``"fp32"``, or ``"fp16"`` / ``"bf16"`` (the torch engine only).
    precision: str = "fp32"

    @property
    def name(self) -> str:
        """``"<index>@<device>"``, e.g. ``"0@cpu"``: the replica's name in logs and metrics;
        after a reload ``"<index>@<device>#<generation>"`` (``"0@cpu#2"``), so that the old
        and the new model's replicas never share a name."""
        base = f"{self.index}@{self.device}"
        return base if self.generation == 1 else f"{base}#{self.generation}"


@dataclass(frozen=True)
class Ready:
    """The replica loaded its net and ran a warm-up batch of every size it will be sent."""

    pid: int
    engine: str
    device: str
    num_classes: int
    #: Every blob of the net and one image's shape of it (``net.blobs``, input first).
    blobs: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class StartFailed:
    """The replica could not load its net or warm up; ``message`` says why."""

    message: str


@dataclass(frozen=True)
class SharedImages:
    """Where a batch's encoded images lie in the replica's image arena
    (:mod:`gre.replicas.arena`): ``(offset, length)`` per image, bytes."""

    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class BatchRequest:
    """One batch to classify: encoded images (inline, or in the image arena) and, per image,
    how many classes to answer and which blobs to return (``blobs`` empty: none for any
    image)."""

    images: tuple[bytes, ...] | SharedImages
    top_ks: tuple[int, ...]
    blobs: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Stop:
    """Exit after the batch in progress (the front end is stopping this replica)."""


@dataclass(frozen=True)
class Prediction:
    """One image's top-k: class indices and their probabilities, most probable first; and
    the blobs it asked for, each a ``(D,) float32`` NumPy array (flattened C, H, W)."""

    indices: tuple[int, ...]
    confidences: tuple[float, ...]
    features: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ItemError:
    """One image of a batch that could not be classified; the rest of the batch is unaffected.

    ``code`` is the API error code (``bad_image``, ``too_large``, ``unsupported_format``: the
    catalogue in ``gre.http.errors`` gives its HTTP status); ``message`` says what was wrong.
    """

    code: str
    message: str


Outcome = Prediction | ItemError


@dataclass(frozen=True)
class BatchResult:
    """A batch's outcomes in request order, its durations in ms, and the replica's resident
    memory after it, bytes (0: unknown)."""

    outcomes: list[Outcome]
    preprocess_ms: float
    inference_ms: float
    rss_bytes: int = 0


@dataclass(frozen=True)
class BatchFailed:
    """The forward pass failed for a whole batch; ``message`` says why. The replica lives on."""

    message: str
