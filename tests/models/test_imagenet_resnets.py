"""ImageNet ResNet-50 variants: parameter counts pinned to the authors', forward shapes, names."""

import numpy as np
import pytest

from gmsop_keras.models.imagenet_resnets import build_imagenet_model, list_imagenet_models

# Trainable parameters of the authors' PyTorch models (millions).
PUBLISHED_PARAMETERS = {
    "resnet50-imagenet": 25.56,
    "gsop1-resnet50": 28.29,
    "gsop2-resnet50": 58.28,
    "gauss-resnet50": 33.85,
    "resnet50-3g": 57.97,
}


def trainable_parameters(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_every_model_has_a_published_count():
    assert sorted(list_imagenet_models()) == sorted(PUBLISHED_PARAMETERS)


@pytest.mark.parametrize("name", list_imagenet_models())
def test_parameter_count_within_one_percent(name):
    model = build_imagenet_model(name, input_shape=(64, 64, 3))  # counts do not depend on the size
    assert trainable_parameters(model) / 1e6 == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.01)


@pytest.mark.parametrize(
    "name, head, representation",
    [("gsop1-resnet50", None, 2048), ("gauss-resnet50", None, 2048), ("resnet50-imagenet", "isqrt-256", 32896)],
)
def test_forward_gives_logits(name, head, representation):
    model = build_imagenet_model(name, num_classes=5, input_shape=(32, 32, 3), head=head)
    assert model.get_layer("predictions").kernel.shape == (representation, 5)
    logits = np.asarray(model(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")))
    assert logits.shape == (2, 5) and np.isfinite(logits).all()


def test_unknown_names_are_listed():
    with pytest.raises(ValueError, match="resnet50-imagenet"):
        build_imagenet_model("resnet51")
    with pytest.raises(ValueError, match="head"):
        build_imagenet_model("resnet50-imagenet", head="gm-sop-16-8")
