"""What a classify exchange reads of a request, as it crosses from an HTTP worker to the
primary (gre.http.classify_exchange): plain tuples, made whole again."""

from __future__ import annotations

import pickle

from gre.http.classify_exchange import Sent, checked_from, checked_image, sent_from
from gre.model.imaging import ImageInfo
from tests.http.test_direct_classify import TINY


def test_sent_comes_back_whole_from_its_plain_tuple() -> None:
    sent = Sent(request_id="r-1", timeout="250", length="923", query=b"top_k=2")
    crossed = pickle.loads(pickle.dumps(tuple(sent)))
    back = sent_from(crossed)
    assert type(back) is Sent
    assert back == sent
    assert (back.request_id, back.timeout, back.length, back.query) == (
        "r-1", "250", "923", b"top_k=2",
    )  # fmt: skip


def test_an_image_header_comes_back_as_image_info() -> None:
    checked = checked_image(TINY, 1_000)
    back = checked_from(pickle.loads(pickle.dumps(tuple(checked))))
    assert type(back) is ImageInfo
    assert (back.format, back.width, back.height) == ("jpeg", 16, 16)


def test_a_refusal_comes_back_as_its_code_and_message() -> None:
    checked = checked_image(TINY, 100)  # 256 pixels: over the limit
    assert not isinstance(checked, ImageInfo)
    back = checked_from(pickle.loads(pickle.dumps(tuple(checked))))
    assert not isinstance(back, ImageInfo)
    assert back == checked
    assert back[0] == "too_large"
