"""The error catalogue: complete, consistent, and in step with README's errors table."""

from __future__ import annotations

import json
import re

import pytest

from gre.http.errors import CATALOGUE, ErrorCode, error_response
from gre.model import imaging
from tests.support import ROOT


def readme_errors() -> dict[str, tuple[int, str]]:
    """README's errors table: code -> (status, its "when" text)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| status | `error` | when |") :].split("\n\n")[0]
    rows: dict[str, tuple[int, str]] = {}
    for line in table.splitlines()[2:]:
        status, codes, when = (cell.strip() for cell in line.strip("|").split("|", 2))
        statuses = [int(s) for s in re.findall(r"\d{3}", status)]
        names = re.findall(r"`([a-z_]+)`", codes)
        for i, name in enumerate(names):
            rows[name] = (statuses[min(i, len(statuses) - 1)], when)
    return rows


def test_every_code_has_its_facts() -> None:
    assert set(CATALOGUE) == set(ErrorCode)
    for code in ErrorCode:
        assert 400 <= code.status < 600, code
        assert code.facts.description, code


def test_readme_lists_every_code_with_its_status() -> None:
    readme = readme_errors()
    assert set(readme) == {c.value for c in ErrorCode}
    for code in ErrorCode:
        assert readme[code.value][0] == code.status, code


def test_readme_says_which_answers_carry_retry_after() -> None:
    for code, (_, when) in readme_errors().items():
        assert ("Retry-After" in when) == ErrorCode(code).facts.retry_after, code


def test_image_errors_use_catalogue_codes() -> None:
    kinds = [imaging.ImageError, imaging.UnsupportedFormat, imaging.TooManyPixels]
    assert {ErrorCode(kind.code).status for kind in kinds} == {400, 413, 415}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_one_encoder_for_every_answer(code: ErrorCode) -> None:
    response = error_response(code, "what was wrong", {"X-Request-Id": "abc"})
    assert response.status_code == code.status
    assert json.loads(bytes(response.body)) == {"error": code.value, "message": "what was wrong"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "abc"
    assert ("retry-after" in response.headers) == code.facts.retry_after


def test_metric_reasons() -> None:
    assert ErrorCode.DEADLINE_EXCEEDED.reason == "deadline"
    assert ErrorCode.QUEUE_FULL.reason == "queue_full"
    assert ErrorCode.NOT_FOUND.reason is None


def test_readme_lists_every_metric_reason() -> None:
    text = (ROOT / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `gre_rejected_total"))
    listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[3]))
    assert listed == {c.reason for c in ErrorCode if c.reason is not None}
