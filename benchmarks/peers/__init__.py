"""Peers: other servers of gre's own pipeline, for the load test to compare gre against.

Same model (open_nsfw), same decode, preprocessing and engine (``gre.offline.build_classifier``
in-process, see :mod:`benchmarks.peers.pipeline`), same API: ``POST {url}/api/classify`` with the
raw image bytes as the body (``?top_k=`` optional) answers gre's JSON, ``[{"confidence": p,
"label": "..."}, ...]``, and gre's ``{"error", "message"}`` refusals (400, 413, 415, 422);
``GET {url}/api/model`` tells the peer, engine, batching settings and ``batches_by_size``
(images per forward so far). Only the serving framework differs:

- ``naive``: Starlette + Uvicorn, one forward per request, no batching (gre's ``.venv``);
- ``bentoml``: BentoML with adaptive batching (``@bentoml.api(batchable=True)``), one worker;
- ``rayserve``: Ray Serve with ``@serve.batch``, one replica.

Each runs on 127.0.0.1 from its own venv (:mod:`benchmarks.peers.venvs`), so that the frameworks'
dependencies stay out of gre's. ``python -m benchmarks.peers --help`` for the command line.
"""

from benchmarks.peers.launch import PeerStartError, running_peer
from benchmarks.peers.venvs import PEER_NAMES, PeerSetupError, ensure_venv, peer_versions

__all__ = [
    "PEER_NAMES",
    "PeerSetupError",
    "PeerStartError",
    "ensure_venv",
    "peer_versions",
    "running_peer",
]
