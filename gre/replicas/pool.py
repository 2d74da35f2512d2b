"""Keep every replica slot filled: start, watch, restart with backoff, give up when hopeless.

One supervisor task per slot starts its replica, dispatches to it through the scheduler
until the replica dies, hangs (``replica_timeout_ms``) or exits, then starts a new one after
an exponential backoff. A slot whose replica fails to *start* ``start_attempts`` times in a
row (a bad caffemodel, say) is fatal: the service exits non-zero with the replica's error,
for systemd to restart it, rather than looping.

A replica whose resident memory passes ``max_rss_mb`` after a batch is stopped between
batches and replaced at once (a restart, without backoff). :meth:`ReplicaPool.retire` ends
a whole pool the same way, for a model reload: no new batches, those in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gre.batching.errors import ReplicaLost, ReplicaStartError
from gre.batching.scheduler import Scheduler
from gre.config import ReplicasConfig
from gre.messages import BatchResult, Ready, ReplicaSpec
from gre.replicas.replica import Replica

log = logging.getLogger("gre.replicas.pool")

#: A replica that stayed up this long (s) resets its slot's crash backoff.
STABLE_AFTER_S = 60.0
#: The longest wait between restarts (s).
MAX_BACKOFF_S = 30.0


class SlotState(enum.StrEnum):
    """A replica slot's state (``gre_replicas{state}``), as vLLM's ``RequestStatus``."""

    STARTING = "starting"  # its replica is loading its net and warming up
    READY = "ready"  # its replica takes batches
    DEAD = "dead"  # its replica failed or died; waiting out the backoff before a restart
    STOPPED = "stopped"  # the pool was stopped


class ReplicaHandle(Protocol):
    """What the pool drives: :class:`~gre.replicas.replica.Replica` (a process), or a fake
    one in tests of the HTTP layer."""

    name: str

    @property
    def pid(self) -> int | None:
        """The process id, while it runs."""
        ...

    async def start(self, timeout_s: float) -> Ready:
        """Start and warm up; raises :class:`ReplicaStartError`."""
        ...

    async def run(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[tuple[str, ...]] = (),
    ) -> BatchResult:
        """Classify one batch (as :class:`gre.batching.scheduler.Worker`)."""
        ...

    async def wait(self) -> int:
        """Wait for the replica to exit; its exit status."""
        ...

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """Exit after the batch in progress."""
        ...

    async def kill(self) -> int | None:
        """Kill at once (a no-op if never started)."""
        ...


@dataclass(eq=False)
class Slot:
    """One replica position: its spec, current replica, state and history."""

    spec: ReplicaSpec
    name: str
    state: SlotState = SlotState.STARTING
    replica: ReplicaHandle | None = None
    info: Ready | None = None
    restarts: int = 0
    error: str | None = None
    first_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Its replica's dispatch loop while it is ready.
    dispatch: asyncio.Future[None] | None = None
    #: The task that keeps it filled (:meth:`ReplicaPool.start`).
    supervisor: asyncio.Task[None] | None = None

    @property
    def device(self) -> str:
        """The device its replica reported using, else the one planned (e.g. ``"gpu:0"``)."""
        return self.info.device if self.info else str(self.spec.device)


class DispatchEnd(enum.Enum):
    """Why a replica stopped taking batches."""

    LOST = "lost"  # it died, hung or exited: restart after a backoff
    OVER_MEMORY = "over_memory"  # past max_rss_mb after a batch: replace it now
    RETIRED = "retired"  # the pool is retiring: stop it


class ReplicaPool:
    """Supervises one replica per spec, feeding each ready replica to ``scheduler``.

    Args:
        specs: one per replica slot.
        scheduler: dispatches batches to the ready replicas.
        config: timeouts, start attempts and backoff (``[replicas]``).
        on_fatal: called once with the error when a slot cannot be started.
        on_ready: called with each replica's :class:`Ready` (e.g. to check the class count);
            raising :class:`ReplicaStartError` from it counts as a failed start.
        replica: makes the handle for a spec (default: a :class:`Replica` process).
    """

    def __init__(
        self,
        specs: list[ReplicaSpec],
        scheduler: Scheduler,
        config: ReplicasConfig,
        on_fatal: Callable[[str], None],
        on_ready: Callable[[Ready], None] = lambda info: None,
        replica: Callable[[ReplicaSpec], ReplicaHandle] = Replica,
    ) -> None:
        self.slots = [Slot(spec, spec.name) for spec in specs]
        self.scheduler = scheduler
        self.config = config
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._new_replica = replica
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._retiring = False
        self._max_rss_bytes = (
            None if config.max_rss_mb is None else int(config.max_rss_mb * 1024 * 1024)
        )
        self._failed = asyncio.Event()
        self.fatal_error: str | None = None

    @property
    def ready_count(self) -> int:
        """Replicas ready to take batches now."""
        return sum(slot.state is SlotState.READY for slot in self.slots)

    @property
    def all_started(self) -> bool:
        """Every slot has had a ready replica at least once (loaded and warmed up)."""
        return all(slot.first_ready.is_set() for slot in self.slots)

    @property
    def restarts(self) -> int:
        """Replica restarts after a crash or hang, over every slot."""
        return sum(slot.restarts for slot in self.slots)

    def states(self) -> dict[str, int]:
        """How many slots are in each :class:`SlotState`, by its value."""
        counts = dict.fromkeys((state.value for state in SlotState), 0)
        for slot in self.slots:
            counts[slot.state.value] += 1
        return counts

    def start(self) -> None:
        """Start supervising every slot (returns at once; see :meth:`wait_started`)."""
        for slot in self.slots:
            slot.supervisor = asyncio.create_task(
                self._supervise(slot), name=f"supervise-{slot.name}"
            )
        self._tasks = [slot.supervisor for slot in self.slots if slot.supervisor is not None]

    async def wait_started(self) -> None:
        """Wait until every slot was ready once.

        Raises:
            ReplicaStartError: a slot was given up on before that.
        """
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(slot.first_ready.wait()) for slot in self.slots
        }
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            while waits and not self._failed.is_set():
                done, _ = await asyncio.wait(waits | {failed}, return_when=asyncio.FIRST_COMPLETED)
                waits -= done
        finally:
            for wait in (*waits, failed):
                wait.cancel()
        if self.fatal_error is not None:
            raise ReplicaStartError(self.fatal_error)

    def _backoff(self, failures: int) -> float:
        base = self.config.restart_backoff_ms / 1e3
        return float(min(MAX_BACKOFF_S, base * 2 ** (failures - 1)))

    async def _supervise(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        start_failures = 0
        crashes = 0
        timeout_s = self.config.replica_timeout_ms / 1e3
        while True:
            slot.state = SlotState.STARTING
            replica = slot.replica = self._new_replica(slot.spec)
            try:
                info = await replica.start(self.config.start_timeout_s)
                self._on_ready(info)
            except ReplicaStartError as exc:
                await replica.kill()
                start_failures += 1
                slot.state, slot.error = SlotState.DEAD, str(exc)
                if start_failures >= self.config.start_attempts:
                    self.fatal_error = (
                        f"replica {slot.name} failed to start {start_failures} times; "
                        f"last error: {exc}"
                    )
                    log.critical("%s", self.fatal_error)
                    self._failed.set()
                    self._on_fatal(self.fatal_error)
                    return
                delay = self._backoff(start_failures)
                log.error("%s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            start_failures = 0
            slot.state, slot.info, slot.error = SlotState.READY, info, None
            slot.first_ready.set()
            up_since = loop.time()
            log.info(
                "replica %s ready: pid %d, engine %s on %s",
                slot.name, info.pid, info.engine, info.device,
            )  # fmt: skip
            end = await self._run_until_lost(slot, replica, timeout_s)
            if self._stopping or self._retiring:
                return
            slot.state = SlotState.DEAD
            slot.restarts += 1
            if end is DispatchEnd.OVER_MEMORY:
                continue  # stopped between batches: nothing lost, nothing to back off from
            crashes = 1 if loop.time() - up_since > STABLE_AFTER_S else crashes + 1
            delay = self._backoff(crashes)
            log.warning("restarting replica %s in %.1f s", slot.name, delay)
            await asyncio.sleep(delay)

    def _keep_going(self, slot: Slot) -> Callable[[BatchResult], bool]:
        """The dispatch loop's question after each batch: go on, unless the pool is retiring
        or the replica is past ``max_rss_mb``."""

        def keep_going(result: BatchResult) -> bool:
            limit = self._max_rss_bytes
            if limit is not None and result.rss_bytes > limit:
                log.warning(
                    "replica %s holds %.0f MiB, over max_rss_mb %.0f: replacing it",
                    slot.name, result.rss_bytes / 2**20, limit / 2**20,
                )  # fmt: skip
                return False
            return not self._retiring

        return keep_going

    async def _run_until_lost(
        self, slot: Slot, replica: ReplicaHandle, timeout_s: float
    ) -> DispatchEnd:
        dispatch = asyncio.ensure_future(
            self.scheduler.run_worker(replica, timeout_s, self._keep_going(slot))
        )
        slot.dispatch = dispatch
        exited = asyncio.ensure_future(replica.wait())
        end = DispatchEnd.LOST
        try:
            await asyncio.wait({dispatch, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and not dispatch.done():
                if not self._stopping:
                    status = exited.result()
                    log.error(
                        "replica %s (pid %s) exited with status %s", slot.name, replica.pid, status
                    )
                # Idle: nothing to lose, stop dispatching. Busy: the batch sees the broken
                # connection and is retried or answered by run_worker itself.
                if not self.scheduler.busy(replica.name):
                    dispatch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatch
            if not exited.done() and (self._retiring or not dispatch.cancelled()):
                # run_worker returned (or, idle, was cancelled) between batches: nothing is
                # in flight, so the replica exits cleanly.
                end = DispatchEnd.RETIRED if self._retiring else DispatchEnd.OVER_MEMORY
                await replica.stop()
        except ReplicaLost as exc:
            log.error("%s", exc)
        except Exception:  # a bug in dispatching must not leave the slot dead but "ready"
            log.exception("dispatching to replica %s failed", slot.name)
        finally:
            slot.dispatch = None
            exited.cancel()
            await replica.kill()
        return end

    async def retire(self) -> None:
        """End the pool without losing a request (a model reload's old pool): no replica takes
        another batch, those running a batch finish it and are answered, then every replica
        is stopped and its slot :attr:`SlotState.STOPPED`."""
        self._retiring = True
        for slot in self.slots:
            replica = slot.replica
            idle = replica is None or not self.scheduler.busy(replica.name)
            if slot.dispatch is not None and idle:
                slot.dispatch.cancel()  # waiting in the queue: nothing taken yet
            elif slot.dispatch is None and slot.supervisor is not None:
                slot.supervisor.cancel()  # starting or backing off: it holds no batch
        # Busy replicas return from run_worker after their batch (keep_going says no).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop()

    async def stop(self) -> None:
        """Ask every replica to exit after its batch (killing any that do not), then stop
        supervising."""
        self._stopping = True
        replicas = [slot.replica for slot in self.slots if slot.replica is not None]
        await asyncio.gather(*(r.stop() for r in replicas))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for slot in self.slots:
            slot.state = SlotState.STOPPED
