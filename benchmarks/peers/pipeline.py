"""gre's own pipeline inside a peer: the same checks, decode, preprocessing and engine, in-process.

Every peer server wraps one :class:`Pipeline`, so that the only difference between the peers
and gre is the serving framework around it: how requests are received, queued, batched and
answered. Answers have gre's shape (``gre.model.labels.answer``) and gre's error codes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gre.config import load_config
from gre.http.errors import ErrorCode
from gre.messages import ItemError
from gre.model.imaging import ImageError, check_image
from gre.model.labels import answer
from gre.model.loader import load_model
from gre.offline import build_classifier


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: ``status`` and its JSON ``body``, gre's ``[{"confidence", "label"},
    ...]`` or ``{"error": code, "message": ...}``."""

    status: int
    body: Any


class Refused(Exception):
    """A request refused before classification, as gre's front end refuses it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(status, {"error": code, "message": message})


class Pipeline:
    """gre's default model (open_nsfw; ``GRE_*`` environment overrides apply, as for gre) with
    ``engine``, loaded on the CPU in this process by ``gre.offline.build_classifier``.

    Not thread-safe (the cv2.dnn net is not): callers serialise :meth:`classify`.

    Raises:
        gre.config.ConfigError, gre.service.StartupError: the model cannot be loaded.
    """

    def __init__(self, engine: str) -> None:
        self.config = load_config(None, overrides={"engine": engine})
        model = load_model(self.config)
        self.engine = model.engine
        self.labels = model.labels
        self.num_classes = len(model.labels) if model.labels else None
        self.classifier = build_classifier(self.config, model)
        #: Images per forward so far, for ``GET /api/model``.
        self.batches_by_size: Counter[int] = Counter()
        self._count_lock = threading.Lock()

    def top_k(self, raw: str | None) -> int:
        """The ``top_k`` query parameter as gre parses it (default ``default_top_k``).

        Raises:
            Refused: 422 ``bad_top_k``.
        """
        classes = self.num_classes
        if raw is None:
            default = self.config.server.default_top_k
            return min(default, classes) if classes else default
        try:
            top_k = int(raw)
        except ValueError:
            raise Refused(422, "bad_top_k", f"top_k must be an integer, got {raw!r}") from None
        if top_k < 1 or (classes is not None and top_k > classes):
            limit = f"1..{classes}" if classes else ">= 1"
            raise Refused(422, "bad_top_k", f"top_k must be in {limit}, got {top_k}")
        return top_k

    def check(self, body: bytes) -> None:
        """gre's checks before queueing: body size, then format and pixel count from the header.

        Raises:
            Refused: 413 ``too_large``, 415 ``unsupported_format``, 400 ``bad_image``.
        """
        limit = self.config.server.max_body_bytes
        if len(body) > limit:
            raise Refused(413, "too_large", f"the body exceeds the limit of {limit} bytes")
        try:
            check_image(body, self.config.server.max_pixels)
        except ImageError as exc:
            raise Refused(ErrorCode(exc.code).status, exc.code, str(exc)) from None

    def classify(self, images: Sequence[bytes], top_ks: Sequence[int]) -> list[Reply]:
        """Decode, preprocess and run ``images`` as one batch (one forward); per image its
        answer, or its error (status from the catalogue: 400 for an image that does not decode).

        Raises:
            gre.model.engines.EngineError: the forward failed.
        """
        result = self.classifier.classify(images, top_ks)
        with self._count_lock:
            self.batches_by_size[len(images)] += 1
        return [
            Reply(ErrorCode(o.code).status, {"error": o.code, "message": o.message})
            if isinstance(o, ItemError)
            else Reply(200, answer(o, self.labels))
            for o in result.outcomes
        ]

    def describe(self, peer: str, batching: dict[str, Any]) -> dict[str, Any]:
        """``GET /api/model``'s body: peer, engine, its batching settings, batches by size."""
        with self._count_lock:
            sizes = {str(size): n for size, n in sorted(self.batches_by_size.items())}
        return {"peer": peer, "engine": self.engine, "batching": batching, "batches_by_size": sizes}
