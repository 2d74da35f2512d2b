"""The section runner of benchmarks/gpu_check.py: each section in a process of its own, under a
time budget, its figures kept whatever happens to it, and the summary table and JSON report.

A section runs as a child process (``python -m benchmarks.gpu_check --section NAME``), so that
a crash, a hang or a broken CUDA context in one cannot take the next ones with it. The child
writes its figures to a JSON file as it goes (:class:`Figures`), so that what it measured
before it failed or ran out of time is kept. Its exit status says how it ended
(:data:`EXIT_SKIPPED`, :data:`EXIT_PARTIAL`, else 0 or a failure). A child past its budget
gets SIGTERM (the section's handler unwinds, so that the servers it started are stopped),
then, :data:`KILL_GRACE_S` later, SIGKILL for its whole process group.

Nothing here imports gre, numpy or torch: the parent process stays light, and runs before
set-up has made them importable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

STATUSES = ("ok", "partial", "failed", "skipped")
#: A section that lacks what it needs exits with this (its ``why`` says what is missing).
EXIT_SKIPPED = 3
#: A section its budget cut short exits with this (its ``why`` says what was left out).
EXIT_PARTIAL = 4
#: Seconds between SIGTERM to a child past its budget and SIGKILL to its process group.
KILL_GRACE_S = 10.0
#: A section's exit status when SIGTERM (its budget spent) stopped it.
EXIT_STOPPED = 5
#: A section is not started with less than this many seconds of the total budget left.
MIN_SECTION_S = 5.0


class Skip(Exception):
    """Raised by a section that cannot run here; the message says why (what is missing)."""


class Partial(Exception):
    """Raised by a section that its budget made leave work out; the message says what."""


class Failed(Exception):
    """Raised by a section whose check failed (a figure past its bound); the message says
    which. Its figures are all recorded first."""


class OverBudget(BaseException):
    """Raised in a section by SIGTERM from the runner: its budget is spent (a BaseException,
    so that the section's own ``except Exception`` handlers let it through)."""


@dataclass
class Budget:
    """A section's time budget: ``seconds`` from ``start`` (``time.monotonic()``)."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds left (negative once spent)."""
        return self.start + self.seconds - time.monotonic()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` more work fits in what is left."""
        return self.left() >= seconds


class Figures:
    """A section's figures, rewritten to ``path`` (atomically) at every change, so that the
    runner reads what was measured even from a section it had to kill.

    ``figures`` is the nested dict of results; ``why`` the section's note on how it ended
    (what is missing, what was left out, which check failed).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: dict[str, Any] = {}
        self.why = ""
        self._flush()

    def set(self, *keys_and_value: Any) -> None:
        """``set("nets", "alexnet", {...})``: nested keys, then the value."""
        *keys, last, value = keys_and_value
        node = self.figures
        for key in keys:
            node = node.setdefault(str(key), {})
        node[str(last)] = value
        self._flush()

    def note(self, why: str) -> None:
        """Add to ``why`` (``"; "``-separated)."""
        self.why = f"{self.why}; {why}" if self.why else why
        self._flush()

    def _flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"figures": self.figures, "why": self.why}, default=str))
        os.replace(tmp, self.path)


def read_figures(path: Path) -> tuple[dict[str, Any], str]:
    """``(figures, why)`` a section left in ``path`` (empty when it wrote nothing readable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, ""
    return dict(data.get("figures", {})), str(data.get("why", ""))


@dataclass
class Outcome:
    """How one section ended: ``status`` (one of :data:`STATUSES`), ``why`` (empty for a
    plain ``ok``), wall ``seconds``, its ``budget_s`` and its figures."""

    name: str
    status: str
    why: str
    seconds: float
    budget_s: float
    figures: dict[str, Any] = field(default_factory=dict)


class Log:
    """Lines to stdout and to a file (``None``: stdout only), flushed as they come."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = path.open("w", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def __call__(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)
            if self._file:
                self._file.write(text + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()


def _last_error(lines: Sequence[str]) -> str:
    """The child's last non-empty output line (a traceback ends with the exception)."""
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:300]
    return "no output"


def run_child(
    name: str,
    command: Sequence[str],
    budget_s: float,
    figures_path: Path,
    log: Log,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Outcome:
    """Run one section's ``command``, its output echoed to ``log``, within ``budget_s``."""
    figures_path.unlink(missing_ok=True)
    start = time.monotonic()
    child = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )
    lines: list[str] = []

    def echo() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip("\n"))
            log("  " + lines[-1])

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    over = False
    try:
        child.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        over = True
        child.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=KILL_GRACE_S)
    # Whatever the child started in its session (gre serve and its replicas, hey).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    reader.join(timeout=5)
    seconds = time.monotonic() - start
    figures, why = read_figures(figures_path)
    code = child.returncode
    if over:
        status = "failed"
        why = f"over its budget of {budget_s:.0f} s: stopped, figures so far kept" + (
            f"; {why}" if why else ""
        )
    elif code == 0:
        status = "ok"
    elif code == EXIT_SKIPPED:
        status = "skipped"
    elif code == EXIT_PARTIAL:
        status = "partial"
    else:
        status = "failed"
        why = why or f"exit status {code}: {_last_error(lines)}"
    return Outcome(name, status, why, seconds, budget_s, figures)


@dataclass(frozen=True)
class Plan:
    """A section to run: its name and budget (s), and how to run it: ``run(budget_s)``
    returns its :class:`Outcome` (normally :func:`run_child`), or ``skip`` says why not."""

    name: str
    budget_s: float
    run: Callable[[float], Outcome]
    skip: str = ""


def run_sections(
    plans: Sequence[Plan], total_s: float, log: Log, clock: Callable[[], float] = time.monotonic
) -> list[Outcome]:
    """Run ``plans`` in order, each within its budget and what is left of ``total_s`` (by
    ``clock``, s); a section that fails, or raises here, is recorded and the next one runs."""
    deadline = clock() + total_s
    outcomes: list[Outcome] = []
    for plan in plans:
        left = deadline - clock()
        budget = min(plan.budget_s, left)
        log(f"== {plan.name} (budget {budget:.0f} s)")
        if plan.skip:
            outcome = Outcome(plan.name, "skipped", plan.skip, 0.0, budget)
        elif budget < MIN_SECTION_S:
            why = f"only {max(left, 0):.0f} s of the total {total_s:.0f} s left"
            outcome = Outcome(plan.name, "skipped", why, 0.0, budget)
        else:
            start = clock()
            try:
                outcome = plan.run(budget)
            except Exception as exc:  # the runner's own trouble: record it, go on
                why = f"{type(exc).__name__}: {exc}"
                outcome = Outcome(plan.name, "failed", why, clock() - start, budget)
        log(f"-- {plan.name}: {outcome.status}" + (f": {outcome.why}" if outcome.why else ""))
        outcomes.append(outcome)
    return outcomes


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """The summary: one line per section, its status, seconds (of its budget) and why."""
    header = f"{'section':<12} {'status':<8} {'seconds':>13}  why"
    lines = [header, "-" * len(header)]
    for o in outcomes:
        lines.append(
            f"{o.name:<12} {o.status:<8} {o.seconds:6.1f} / {o.budget_s:4.0f}  {o.why}".rstrip()
        )
    total = sum(o.seconds for o in outcomes)
    lines.append(f"{'total':<12} {'':<8} {total:6.1f}")
    return "\n".join(lines)


def report(outcomes: Sequence[Outcome], header: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: ``header`` (machine, command, options) and each section's outcome."""
    return {
        **header,
        "total_s": round(sum(o.seconds for o in outcomes), 1),
        "sections": {o.name: {k: v for k, v in asdict(o).items() if k != "name"} for o in outcomes},
    }
