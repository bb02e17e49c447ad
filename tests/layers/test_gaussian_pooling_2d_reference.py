"""GaussianPooling2D against a float64 numpy transcription of the docstring: the training noise.

When training, `W = softplus(MU + SIGMA * eps)`, `eps ~ N(0, 1)`, with MU and SIGMA predicted from
the global average of the map (Dense to C/2 + BN + ReLU, then Dense to C + BN for MU, and the
same followed by a sigmoid for SIGMA; BatchNorm on the batch's statistics, epsilon 1e-5). The
sampled `MU + SIGMA * eps` is read back from the output: `W = (out - mean) / std` of each window,
then the inverse softplus `log(expm1(W))`. Its standardisation `(t - MU) / SIGMA` must be N(0, 1),
shared or independent along the axes the noise mode says. At inference `W = softplus(MU)` with the
moving statistics, and there is no noise.
"""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import GaussianPooling2D

BN_EPSILON = 1e-5  # the authors' (PyTorch's) BatchNorm epsilon, from the docstring
NUM_DRAWS = 400
# |estimate - truth| < 4 standard errors: per test about 6e-5 false alarms (the draws are seeded)
STANDARD_ERRORS = 4.0


def window_moments(x, size=2):
    """Mean and std (clamped at sqrt(1e-6)) of non-overlapping windows, float64."""
    b, h, w, c = x.shape
    win = x.astype("float64").reshape(b, h // size, size, w // size, size, c)
    mean = win.mean(axis=(2, 4))
    variance = (win**2).mean(axis=(2, 4)) - mean**2
    return mean, np.sqrt(np.maximum(variance, 1e-6))


def numpy_batch_norm(x, norm, training):
    """BatchNorm over the batch axis, float64: the batch's (biased) statistics or the moving ones."""
    gamma, beta, moving_mean, moving_variance = (np.float64(keras.ops.convert_to_numpy(w)) for w in (
        norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
    mean, variance = (x.mean(axis=0), x.var(axis=0)) if training else (moving_mean, moving_variance)
    return gamma * (x - mean) / np.sqrt(variance + BN_EPSILON) + beta


def numpy_dense(x, dense):
    kernel, bias = (np.float64(keras.ops.convert_to_numpy(w)) for w in (dense.kernel, dense.bias))
    return x @ kernel + bias


def numpy_mu_sigma(layer, x, training):
    """MU and SIGMA `(batch, channels)` of the docstring, float64, from the layer's weights."""
    pooled = x.astype("float64").mean(axis=(1, 2))
    hidden = np.maximum(numpy_batch_norm(numpy_dense(pooled, layer.hidden_dense), layer.hidden_norm, training), 0)
    mu = numpy_batch_norm(numpy_dense(hidden, layer.mean_dense), layer.mean_norm, training)
    sigma_logit = numpy_batch_norm(numpy_dense(hidden, layer.sigma_dense), layer.sigma_norm, training)
    return mu, 1.0 / (1.0 + np.exp(-sigma_logit))


def inverse_softplus(w):
    return np.log(np.expm1(w))


def sampled_logits(layer, x, training):
    """`MU + SIGMA * eps` (or MU) of every output, read back from the output through the windows."""
    mean, std = window_moments(x)
    out = np.float64(keras.ops.convert_to_numpy(layer(x, training=training)))
    return inverse_softplus((out - mean) / std)


def make_layer(noise, x):
    """A built layer whose BatchNorms have non-trivial scales, offsets and moving statistics."""
    layer = GaussianPooling2D(noise=noise, seed=11)
    layer.build(x.shape)
    rng = np.random.default_rng(5)
    for norm in (layer.hidden_norm, layer.mean_norm, layer.sigma_norm):
        size = norm.gamma.shape[0]
        norm.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
        norm.beta.assign(rng.uniform(-0.5, 0.5, size).astype("float32"))
        norm.moving_mean.assign(rng.uniform(-0.5, 0.5, size).astype("float32"))
        norm.moving_variance.assign(rng.uniform(0.2, 2.0, size).astype("float32"))
    return layer


def feature_map(seed=0, shape=(4, 4, 4, 4)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("noise", ["per_channel", "per_position"])
def test_training_samples_are_mu_plus_sigma_times_standard_normal(noise):
    """Over NUM_DRAWS draws, each output's sample mean is MU and its sample std is SIGMA (within 4
    standard errors: SIGMA / sqrt(n) for the mean, SIGMA / sqrt(2 (n - 1)) for the std), and the
    standardised noise pooled over all outputs has mean 0 and std 1 (4 standard errors again)."""
    keras.utils.set_random_seed(0)
    x = feature_map()
    layer = make_layer(noise, x)
    mu, sigma = numpy_mu_sigma(layer, x, training=True)  # the batch's statistics
    mu, sigma = mu[:, None, None, :], sigma[:, None, None, :]
    assert sigma.min() > 0.05 and np.ptp(sigma) > 0.3 and np.ptp(mu) > 1.0  # a discriminating case
    samples = np.stack([sampled_logits(layer, x, training=True) for _ in range(NUM_DRAWS)])
    n = NUM_DRAWS
    mean_error = np.abs(samples.mean(axis=0) - mu)
    assert (mean_error < STANDARD_ERRORS * sigma / np.sqrt(n)).all(), mean_error.max()
    std_error = np.abs(samples.std(axis=0, ddof=1) - sigma)
    assert (std_error < STANDARD_ERRORS * sigma / np.sqrt(2 * (n - 1))).all(), std_error.max()
    eps = (samples - mu) / sigma
    independent = eps[:, :, :1, :1, :] if noise == "per_channel" else eps  # per_channel: one per map
    m = independent.size
    assert abs(independent.mean()) < STANDARD_ERRORS / np.sqrt(m)
    assert abs(independent.std() - 1.0) < STANDARD_ERRORS / np.sqrt(2 * m)


@pytest.mark.parametrize("noise", ["per_channel", "per_position"])
def test_noise_is_shared_or_independent_along_the_modes_axes(noise):
    """per_channel: one eps per sample and channel, the same at every position (to 1e-4, the
    read-back's round-off). per_position: one per position too. Whatever is drawn separately is
    uncorrelated: every pairwise correlation over NUM_DRAWS draws is below 4.5 / sqrt(n) (its
    standard error is 1 / sqrt(n); 4.5 leaves room for the 120 to 2016 pairs)."""
    keras.utils.set_random_seed(1)
    x = feature_map(1)
    layer = make_layer(noise, x)
    mu, sigma = numpy_mu_sigma(layer, x, training=True)
    samples = np.stack([sampled_logits(layer, x, training=True) for _ in range(NUM_DRAWS)])
    eps = (samples - mu[:, None, None, :]) / sigma[:, None, None, :]  # (n, batch, 2, 2, channels)
    spread_over_positions = np.ptp(eps.reshape(NUM_DRAWS, 4, 4, 4), axis=2).max()
    if noise == "per_channel":
        assert spread_over_positions < 1e-4
        units = eps[:, :, 0, 0, :].reshape(NUM_DRAWS, -1)  # batch x channels
    else:
        assert spread_over_positions > 1.0
        units = eps.reshape(NUM_DRAWS, -1)  # batch x positions x channels
    correlation = np.corrcoef(units, rowvar=False)
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    assert np.abs(off_diagonal).max() < 4.5 / np.sqrt(NUM_DRAWS), np.abs(off_diagonal).max()


@pytest.mark.parametrize("noise", ["per_channel", "per_position"])
def test_inference_is_softplus_mu_of_the_moving_statistics_without_noise(noise):
    """Eval mode: the output is the same on every call and W = softplus(MU), MU from the moving
    statistics (changed beforehand by training calls), to 1e-4 absolute on MU."""
    x = feature_map(2)
    layer = make_layer(noise, x)
    for _ in range(3):
        layer(x, training=True)  # moves the moving statistics
    mu, _ = numpy_mu_sigma(layer, x, training=False)
    first = sampled_logits(layer, x, training=False)
    second = sampled_logits(layer, x, training=False)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, np.broadcast_to(mu[:, None, None, :], first.shape), atol=1e-4)
    # the training statistics would give something else: the check above sees the moving ones
    assert np.abs(numpy_mu_sigma(layer, x, training=True)[0] - mu).max() > 0.1
