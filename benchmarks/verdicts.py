"""The end of a script benchmark: each target met or missed, one ``PASS``/``FAIL`` line each."""

from __future__ import annotations

from collections.abc import Mapping


def print_verdicts(verdicts: Mapping[str, bool]) -> bool:
    """Print ``PASS  <target>`` or ``FAIL  <target>`` per entry, in order; whether all passed
    (the script's exit status is 0 exactly then)."""
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(verdicts.values())
