from pathlib import Path

import pytest

from gre.model.prototxt import PrototxtError, net_spec, parse, read_net_spec
from tests.support import shared

ZOO = {
    "bvlc_reference_caffenet": (3, 227, 227),
    "bvlc_alexnet": (3, 227, 227),
    "bvlc_googlenet": (3, 224, 224),
    "squeezenet_v1.0": (3, 227, 227),
    "squeezenet_v1.1": (3, 227, 227),
    "mobilenet_v1": (3, 224, 224),
    "mobilenet_v2": (3, 224, 224),
}


@pytest.mark.parametrize(("name", "shape"), ZOO.items())
def test_zoo_deploy_input_geometry(name: str, shape: tuple[int, int, int]) -> None:
    spec = read_net_spec(shared(f"models/{name}/deploy.prototxt"))
    assert spec.input_name == "data"
    assert spec.input_shape == shape
    assert spec.output_name == "prob"
    assert spec.layer_types[-1] == "Softmax"


def test_three_ways_to_declare_the_input() -> None:
    dims = 'input: "img" input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 48'
    shape = 'input: "img" input_shape { dim: 1 dim: 3 dim: 32 dim: 48 }'
    layer = (
        'layer { name: "img" type: "Input" top: "img" '
        "input_param { shape: { dim: 1 dim: 3 dim: 32 dim: 48 } } }"
    )
    for text in (dims, shape, layer):
        spec = net_spec(text + ' layer { name: "fc" type: "InnerProduct" bottom: "img" top: "fc" }')
        assert (spec.input_name, spec.input_shape, spec.output_name) == ("img", (3, 32, 48), "fc")


def test_text_format_details() -> None:
    parsed = parse(
        """
        # comment
        name: 'net' "work"  # adjacent strings concatenate
        layer < name: "a" type: "Pooling" pooling_param { pool: MAX kernel_size: 3 } >
        values: [1, 2.5, -3]
        flag: true;
        """
    )
    assert parsed["name"] == ["network"]
    layer = parsed["layer"][0]
    assert isinstance(layer, dict)
    assert layer["pooling_param"] == [{"pool": ["MAX"], "kernel_size": [3]}]
    assert parsed["values"] == [1, 2.5, -3]
    assert parsed["flag"] == [True]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('layer { name: "x" ', "missing '}'"),
        ("name: @", "unexpected character"),
        ('layer { type: "ReLU" }', "no input declared"),
        ('input: "data" input_dim: 1 input_dim: 3', "must be 4-D"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PrototxtError, match=message):
        net_spec(text)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.prototxt"):
        read_net_spec(tmp_path / "absent.prototxt")
