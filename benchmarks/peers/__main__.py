"""Command line for the peers.

python -m benchmarks.peers setup NAME|all     build the venv(s); print path, size, versions
python -m benchmarks.peers serve NAME --port P [--engine opencv|null]
                                              serve until Ctrl-C or SIGTERM, then stop it all
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from benchmarks.peers.launch import PeerStartError, running_peer
from benchmarks.peers.venvs import (
    PEER_NAMES,
    PeerSetupError,
    build_record,
    ensure_venv,
    peer_versions,
)


def setup(names: list[str]) -> None:
    """Build each peer's venv if missing; print one JSON line per peer."""
    for name in names:
        path = ensure_venv(name)
        record = build_record(name)
        size = record.pop("size_bytes")
        assert isinstance(size, int)
        line = {
            "peer": name,
            "venv": str(path),
            "size_mib": round(size / 2**20),
            **record,
            "versions": peer_versions(name),
        }
        print(json.dumps(line), flush=True)


def serve(name: str, port: int, engine: str) -> None:
    """Run the peer until Ctrl-C or SIGTERM."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with running_peer(name, port=port, engine=engine) as url:
        print(f"peer {name} ({engine}) at {url}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"peer {name}: stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description="gre's peers for the load test"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup_parser = commands.add_parser("setup", help="build the peers' venvs")
    setup_parser.add_argument("name", choices=[*PEER_NAMES, "all"])
    serve_parser = commands.add_parser("serve", help="serve one peer on 127.0.0.1")
    serve_parser.add_argument("name", choices=PEER_NAMES)
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--engine", choices=["opencv", "null"], default="opencv")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            setup(list(PEER_NAMES) if args.name == "all" else [args.name])
        else:
            serve(args.name, args.port, args.engine)
    except (PeerSetupError, PeerStartError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
