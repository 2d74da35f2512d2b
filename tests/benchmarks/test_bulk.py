"""benchmarks.bulk's pure helpers: the closing line of ``gre classify`` parsed, batches cut,
and the overrides that serve a zoo model."""

from __future__ import annotations

import pytest

from benchmarks.bulk import chunks, model_settings, parse_rate
from gre.bulk.run import Summary
from gre.config import load_config


def test_parse_rate_reads_gre_classifys_closing_line() -> None:
    stderr = '{"level": "WARNING"}\n' + Summary(200, 2, 7.3).line() + "\n"
    images, rate, errors = parse_rate(stderr)
    assert (images, errors) == (200, 2)
    assert rate == pytest.approx(27.4)
    with pytest.raises(ValueError, match="no closing line"):
        parse_rate("gre: error: not a blob of this net")


def test_chunks_cover_every_item_in_order() -> None:
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks([], 4) == []


def test_model_settings_load_as_a_config() -> None:
    assert model_settings("open_nsfw") == {}
    settings = model_settings("squeezenet_v1.1")
    config = load_config(None, {}, settings)
    assert config.model.deploy.parent.name == "squeezenet_v1.1"
    assert config.preprocess.mean == [104.0, 117.0, 123.0]
    with pytest.raises(SystemExit, match="unknown model"):
        model_settings("vgg")
