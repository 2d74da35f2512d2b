"""The front end's handle on one replica process: start it, send it batches, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence

from gre.batching.errors import ReplicaBatchError, ReplicaLost, ReplicaStartError
from gre.messages import (
    BatchFailed,
    BatchRequest,
    BatchResult,
    Ready,
    ReplicaSpec,
    StartFailed,
    Stop,
)
from gre.replicas import wire
from gre.replicas.arena import ImageArena

#: Where a replica's stdout and stderr go: one JSON log record per line.
replica_log = logging.getLogger("gre.replica")

#: Longest line of replica output logged as one record, bytes; longer lines are split.
MAX_LINE_BYTES = 16 * 1024


async def log_lines(stream: asyncio.StreamReader, replica: str) -> None:
    """Log each line ``stream`` yields until EOF as a warning naming ``replica``.

    A replica's native libraries (libjpeg, libpng, OpenCV, Caffe's glog, CUDA) write plain
    text to stderr; piping it through here keeps gre's log JSON lines, one object per line.
    """
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # EOF: the last line may lack its newline
            line = exc.partial
        except asyncio.LimitOverrunError as exc:
            line = await stream.read(exc.consumed)
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if text:
            replica_log.warning(text, extra={"replica": replica, "stream": "output"})


def replica_environment(spec: ReplicaSpec) -> dict[str, str]:
    """The process environment for a replica: its GPU pinned before any CUDA library loads,
    or its compute threads fixed before OpenBLAS / OpenMP start."""
    env = dict(os.environ)
    if spec.device.is_gpu:
        env["CUDA_VISIBLE_DEVICES"] = str(spec.device.index)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU replica must not grab a GPU
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(spec.threads)
    return env


class Replica:
    """One replica process, driven over a socketpair with asyncio streams; ``name`` is its
    spec's (``"0@cpu"``)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._output: asyncio.Task[None] | None = None
        self._arena: ImageArena | None = None
        self._running = False  # a batch is in the arena (one at a time)

    @property
    def pid(self) -> int | None:
        """The replica process id, while it runs."""
        return self._process.pid if self._process else None

    async def start(self, timeout_s: float) -> Ready:
        """Spawn the process and wait until its net is loaded and warmed up.

        Raises:
            ReplicaStartError: it reported a failure, exited, or was not ready in
                ``timeout_s``.
        """
        ours, theirs = socket.socketpair()
        self._close_arena()
        self._arena = ImageArena(self.spec.max_batch_bytes)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                # Not `-m gre.replicas.worker`: that would make it __main__, and its
                # pickles would name classes the front end cannot find.
                "from gre.replicas.worker import main; main()",
                str(theirs.fileno()),
                str(self._arena.fd),
                pass_fds=[theirs.fileno(), self._arena.fd],
                env=replica_environment(self.spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                limit=MAX_LINE_BYTES,
            )
        except BaseException:
            self._close_arena()  # no process to share it with
            raise
        finally:
            theirs.close()
        assert self._process.stdout is not None
        self._output = asyncio.create_task(log_lines(self._process.stdout, self.name))
        self._reader, self._writer = await asyncio.open_connection(sock=ours)
        self._writer.write(wire.pack(self.spec))
        try:
            reply = await asyncio.wait_for(wire.read(self._reader), timeout_s)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.kill()
            raise ReplicaStartError(f"replica {self.name} exited while starting") from exc
        except TimeoutError as exc:
            await self.kill()
            raise ReplicaStartError(
                f"replica {self.name} not ready after {timeout_s:.0f} s"
            ) from exc
        if isinstance(reply, StartFailed):
            await self.kill()
            raise ReplicaStartError(f"replica {self.name} failed to start: {reply.message}")
        ready: Ready = reply
        return ready

    async def run(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[tuple[str, ...]] = (),
    ) -> BatchResult:
        """Classify one batch of encoded images in the replica (``blobs``: per image, the
        blobs to return; empty: none).

        Raises:
            ReplicaLost: the replica died (connection lost).
            ReplicaBatchError: its forward pass raised.
        """
        if self._reader is None or self._writer is None:
            raise ReplicaLost(f"replica {self.name} is not running")
        shared = None
        if self._arena is not None and not self._running:
            shared = self._arena.put(images)
        request = BatchRequest(shared or tuple(images), tuple(top_ks), tuple(blobs))
        # Until the answer is read the replica may be reading the arena: a run cancelled
        # or lost before then leaves it marked, and later batches of this handle go inline.
        self._running = shared is not None
        try:
            self._writer.write(wire.pack(request))
            reply = await wire.read(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ReplicaLost(f"replica {self.name} (pid {self.pid}) died") from exc
        self._running = False
        if isinstance(reply, BatchFailed):
            raise ReplicaBatchError(f"replica {self.name}: {reply.message}")
        result: BatchResult = reply
        return result

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the process to exit after its current batch; kill it after ``timeout_s``.

        Returns its exit status (``None`` if it was never started).
        """
        if self._process is None:
            return None
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(wire.pack(Stop()))
                self._writer.close()
        try:
            status = await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            return await self.kill()
        await self._drain_output()
        return status

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit status (negative: killed by signal)."""
        assert self._process is not None
        status = await self._process.wait()
        await self._drain_output()
        return status

    def _close_arena(self) -> None:
        if self._arena is not None:
            self._arena.close()
            self._arena = None

    async def _drain_output(self) -> None:
        """Log what the exited process wrote last (a crash's message); give up after 1 s.
        The process has exited: its image arena is closed too."""
        self._close_arena()
        if self._output is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._output), 1.0)

    async def kill(self) -> int | None:
        """Kill the process (SIGKILL) and reap it; returns its exit status (``None`` if it was
        never started)."""
        if self._process is None:
            return None
        if self._writer is not None:
            self._writer.close()
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        status = await self._process.wait()
        await self._drain_output()
        return status
