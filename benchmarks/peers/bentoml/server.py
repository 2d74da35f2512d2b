"""Serve the BentoML peer on 127.0.0.1 (BentoML's own process supervisor and one worker).

    python -m benchmarks.peers.bentoml.server --port P [--engine opencv|null]

Runs in the peer's venv (``python -m benchmarks.peers setup bentoml``) from the repository
root, with it on ``PYTHONPATH`` (BentoML's worker imports the service from there).
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the BentoML peer (adaptive batching)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="opencv")
    args = parser.parse_args(argv)
    os.environ["GRE_ENGINE"] = args.engine  # the worker process inherits it
    from benchmarks.peers.bentoml.service import GrePeer

    GrePeer.serve_http(host="127.0.0.1", port=args.port)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
