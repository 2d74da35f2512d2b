"""What the front end knows of the model before any replica starts: its files, read and
checked against each other."""

from __future__ import annotations

from dataclasses import dataclass

from gre.config import Config
from gre.model.engines import resolve_engine_name
from gre.model.labels import read_synset_words
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import NetSpec, read_net_spec


class ModelError(ValueError):
    """The model's files cannot be read or do not fit together; the message names the key
    and the path."""


@dataclass(frozen=True)
class Model:
    """The configured model: its name, engine name (``"auto"`` resolved for the CPU; the
    service resolves it again for the devices it plans), net geometry, labels (``None``:
    class numbers) and preprocessing."""

    name: str
    engine: str
    net: NetSpec
    labels: list[str] | None
    preprocessor: Preprocessor


def load_model(config: Config) -> Model:
    """Read the deploy prototxt, labels and mean, and check they fit together.

    Raises:
        ModelError: any of them unreadable or inconsistent (names the key and path).
    """
    model = config.model
    try:
        net = read_net_spec(model.deploy)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.deploy: {model.deploy}: {exc}") from exc
    labels = model.labels
    if model.synset_words is not None:
        try:
            labels = read_synset_words(model.synset_words)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model.synset_words: {model.synset_words}: {exc}") from exc
    try:
        preprocessor = Preprocessor.build(config.preprocess, net.input_shape)
    except (OSError, ValueError) as exc:
        raise ModelError(f"preprocess: {exc}") from exc
    return Model(model.name, resolve_engine_name(model.engine), net, labels, preprocessor)
