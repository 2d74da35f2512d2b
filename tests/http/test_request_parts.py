"""gre.http.request_parts: the access-log record's durations are rounded when it is logged."""

from gre.http.request_parts import MS_FIELDS, rounded


def test_rounded_rounds_the_durations_to_the_microsecond_in_place() -> None:
    record = {"queue_ms": 1.23456789, "duration_ms": 0.0004999, "bytes": 923, "image": "16x16"}
    assert rounded(record) is record
    assert record == {"queue_ms": 1.235, "duration_ms": 0.0, "bytes": 923, "image": "16x16"}
    assert set(MS_FIELDS) == {"queue_ms", "preprocess_ms", "inference_ms", "duration_ms"}
