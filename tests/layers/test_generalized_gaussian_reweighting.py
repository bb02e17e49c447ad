"""GeneralizedGaussianReweighting: one weight in (0, 1) per position, the pooled output, contract."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers.generalized_gaussian_reweighting import GeneralizedGaussianReweighting
from gmsop_keras.ops import square_root_sop
from tests.layer_checks import check_layer


def feature_map(seed=0, shape=(3, 5, 5, 8)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_one_weight_in_0_1_per_position():
    x = feature_map()
    layer = GeneralizedGaussianReweighting()
    out = keras.ops.convert_to_numpy(layer(x))
    ratio = out / x
    np.testing.assert_allclose(ratio, np.repeat(ratio[..., :1], 8, axis=-1), rtol=1e-4)
    # In (0, 1) mathematically; in float32 a far-out position's weight can underflow to 0 (or round
    # to 1), as it did with JAX's random draw of the learned scale.
    assert ((ratio >= 0) & (ratio <= 1)).all() and 0 < np.median(ratio) < 1
    _, weights = layer.reweight(x)
    np.testing.assert_allclose(ratio[..., 0], keras.ops.convert_to_numpy(weights), rtol=1e-4)


def test_each_stage_multiplies_in_its_own_weight():
    """Three stages in (0, 1) each: the total weight is below every single stage's."""
    x = feature_map(1)
    one = GeneralizedGaussianReweighting(num_stages=1)
    three = GeneralizedGaussianReweighting(num_stages=3)
    one(x), three(x)
    w1 = keras.ops.convert_to_numpy(one.reweight(x)[1])
    w3 = keras.ops.convert_to_numpy(three.reweight(x)[1])
    assert w1.shape == w3.shape == (3, 5, 5)
    assert w3.max() < 1.0 and w3.mean() < w1.mean()


def test_reweighted_sop_is_sr_sop_of_the_reweighted_map():
    x = feature_map(2)
    layer = GeneralizedGaussianReweighting(reweighted_sop=True, num_iterations=5)
    got = keras.ops.convert_to_numpy(layer(x))
    reweighted = keras.ops.convert_to_numpy(layer.reweight(x)[0])
    expected = keras.ops.convert_to_numpy(square_root_sop(reweighted, 5))
    assert got.shape == (3, 36)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)  # differs by the 1e-7 I


def test_parameter_count_of_the_paper_module():
    """Per stage at C = 256: five 256x256 convs + 5 BNs, 256->64 conv + BN, 64->1 conv, w.

    No bias in the 64->1 convolution: the authors' `atmap2` has `bias=False`.
    """
    layer = GeneralizedGaussianReweighting()
    layer.build((None, 7, 7, 256))
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    per_stage = 5 * (256 * 256 + 2 * 256) + (256 * 64 + 2 * 64) + 64 + 1
    assert trainable == 3 * per_stage


@pytest.mark.parametrize("reweighted_sop", [False, True])
def test_layer_contract(reweighted_sop, tmp_path):
    x = feature_map(3, (4, 4, 4, 6))
    make = lambda: GeneralizedGaussianReweighting(reweighted_sop=reweighted_sop)  # noqa: E731
    if reweighted_sop:
        check_layer(make, x, (4, 21), tmp_path, atol=1e-5)
    else:
        check_layer(make, x, x.shape, tmp_path, atol=1e-5)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="num_stages"):
        GeneralizedGaussianReweighting(num_stages=0)
    with pytest.raises(ValueError, match="reduction"):
        GeneralizedGaussianReweighting(reduction=0)
    with pytest.raises(ValueError, match="feature maps"):
        GeneralizedGaussianReweighting()(np.zeros((2, 5), dtype="float32"))


def test_the_authors_conventions():
    """3G-Net's code: no bias in any convolution (`atmap2` included), BatchNorm eps 1e-5 and
    momentum 0.1 (Keras' 0.9), and the learned scalar `atmap3` (a 1x1 convolution of one channel)
    drawn He-normal over its fan-out of 1: N(0, 2), not 0."""
    layer = GeneralizedGaussianReweighting(num_stages=60, reduction=2)
    layer.build((None, 3, 3, 2))
    norms = [s for s in layer._flatten_layers() if isinstance(s, keras.layers.BatchNormalization)]
    assert len(norms) == 60 * 6 and all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)
    convs = [s for s in layer._flatten_layers() if isinstance(s, keras.layers.Conv2D)]
    assert len(convs) == 60 * 7 and not any(c.use_bias for c in convs)
    scales = np.array([float(keras.ops.convert_to_numpy(stage.scale)) for stage in layer.stages])
    assert 1.0 < scales.std() < 1.9  # sqrt(2) = 1.41; 60 draws
    with pytest.raises(ValueError, match="epsilon"):
        GeneralizedGaussianReweighting(epsilon=-1.0)
