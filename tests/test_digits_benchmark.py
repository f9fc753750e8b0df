"""The digits benchmark's protocol pieces (split, dequantisation, units)."""

import importlib.util
import os

import numpy as np
import pytest

from tfp_flows import models

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks",
                     "digits_density.py")


@pytest.fixture(scope="module")
def dd():
    spec = importlib.util.spec_from_file_location("digits_density", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_follows_the_protocol(dd):
    from sklearn.datasets import load_digits
    train, test = dd.load_split()
    assert train.shape == (1438, 8, 8, 1) and test.shape == (359, 8, 8, 1)
    images = load_digits().images
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(test[..., 0], images[perm[:359]])
    np.testing.assert_array_equal(train[..., 0], images[perm[359:]])
    assert train.min() == 0 and train.max() == 16


def test_dequantised_values_stay_in_their_bin(dd):
    x = np.arange(17).reshape(1, 17)
    y = dd._dequantize(np.repeat(x, 100, 0), np.random.default_rng(0))
    assert y.dtype == np.float32
    assert np.all(np.floor(y * 17 + 1e-6) == x)  # float32 slack at bin edges


def test_protocol_bits_equal_model_bits_in_17_level_units(dd):
    """(-log p01(y) + 64 log 17) / (64 log 2) with log p01(y) =
    log p17(17 y) + 64 log 17 is bits/dim in the model's own 17-bin units."""
    dist = models.glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=8,
                       num_bins=17)
    model = dd.Model("glow", dist, 17, {})
    _, test = dd.load_split()
    y = dd._dequantize(test[:8], np.random.default_rng(1))
    protocol = (-model.log_p01(y).numpy() + 64 * np.log(17)) / (64 * np.log(2))
    own = dd.tfp_flows.bits_per_dim(dist, 17 * y, dequantize=False).numpy()
    # float32 log-probs of ~200 nats: ~1e-5 nats of rounding, /44 in bits
    np.testing.assert_allclose(protocol, own, atol=1e-5)
