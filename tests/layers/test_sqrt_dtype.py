"""`sqrt_dtype` of SquareRootSOP, GatedMixture and build_model: wired through, saved, and old files load."""

import keras
import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.layers import GatedMixture, SquareRootSOP


def feature_maps(seed=0):
    return np.random.default_rng(seed).standard_normal((3, 4, 4, 6)).astype("float32")


def layer_pair(cls, sqrt_dtype, **kwargs):
    """A layer with `sqrt_dtype` and a float32 twin with the same weights."""
    reference, layer = cls(**kwargs), cls(sqrt_dtype=sqrt_dtype, **kwargs)
    x = feature_maps()
    reference(x), layer(x)
    layer.set_weights(reference.get_weights())
    return reference, layer


@pytest.mark.parametrize("sqrt_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cls, kwargs", [
    (SquareRootSOP, dict(hidden_dims=(8, 8))),
    (GatedMixture, dict(num_components=4, top_k=2, component_dims=(8, 8), gate_dims=(8, 8), seed=0)),
])
def test_half_square_root_is_used_and_close_to_float32(cls, kwargs, sqrt_dtype):
    reference, layer = layer_pair(cls, sqrt_dtype, **kwargs)
    x = feature_maps(1)
    want, got = keras.ops.convert_to_numpy(reference(x)), keras.ops.convert_to_numpy(layer(x))
    assert got.dtype == np.float32
    error = np.abs(got - want).max() / np.abs(want).max()
    # Different (the half products are used) and within the op's tolerance (tests/ops/test_matrix_sqrt_precision.py).
    assert 0 < error < (6e-3 if sqrt_dtype == "float16" else 5e-2), error


@pytest.mark.parametrize("cls, kwargs", [
    (SquareRootSOP, dict(hidden_dims=(8,))),
    (GatedMixture, dict(num_components=4, top_k=2, component_dims=(8, 8), gate_dims=(8, 8))),
])
def test_config_round_trip_and_configs_saved_before_the_option(cls, kwargs):
    layer = cls(sqrt_dtype="bfloat16", **kwargs)
    config = layer.get_config()
    assert config["sqrt_dtype"] == "bfloat16"
    assert cls.from_config(config).sqrt_dtype == "bfloat16"
    del config["sqrt_dtype"]  # a file saved before the option existed
    assert cls.from_config(config).sqrt_dtype == "float32"


@pytest.mark.parametrize("cls, kwargs", [
    (SquareRootSOP, {}),
    (GatedMixture, dict(num_components=4, top_k=2)),
])
def test_an_unknown_sqrt_dtype_is_refused_by_name(cls, kwargs):
    with pytest.raises(ValueError, match="`sqrt_dtype` must be one of .*Received: sqrt_dtype='float64'"):
        cls(sqrt_dtype="float64", **kwargs)


def test_build_model_passes_sqrt_dtype_to_every_square_root_and_checks_it():
    model = build_model("resnet18", "gm-sop-4-2", num_classes=4, input_shape=(16, 16, 3), sop_channels=16,
                        sqrt_dtype="float16")
    assert model.get_layer("mixture").sqrt_dtype == "float16"
    model = build_model("resnet18", "sr-sop", num_classes=4, input_shape=(16, 16, 3), sop_channels=16)
    assert model.get_layer("sr_sop").sqrt_dtype == "float32"  # the default
    with pytest.raises(ValueError, match="`sqrt_dtype` must be float32, bfloat16 or float16"):
        build_model("resnet18", "sr-sop", num_classes=4, input_shape=(16, 16, 3), sqrt_dtype="half")
    with pytest.raises(ValueError, match="`sqrt_dtype` does not apply to backbone='resnet18', head='gap'"):
        build_model("resnet18", "gap", num_classes=4, input_shape=(16, 16, 3), sqrt_dtype="float16")
