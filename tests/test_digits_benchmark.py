"""The digits benchmark's protocol pieces: split, dequantisation, bits/dim
units and the validation selection rule."""

import math

import numpy as np
import pytest
import tensorflow_probability as tfp

from tests.script_loader import load_script

tfb, tfd = tfp.bijectors, tfp.distributions

LOG2_17 = math.log2(17)  # 4.0875...


@pytest.fixture(scope="module")
def dd():
    return load_script("benchmarks", "digits_density")


def test_split_follows_the_protocol(dd):
    from sklearn.datasets import load_digits
    train, validation, test = dd.load_split()
    assert train.shape == (1198, 8, 8, 1)
    assert validation.shape == (240, 8, 8, 1)
    assert test.shape == (359, 8, 8, 1)
    images = load_digits().images
    perm = np.random.default_rng(0).permutation(1797)
    # test unchanged; validation and train carved out of the old train part
    np.testing.assert_array_equal(test[..., 0], images[perm[:359]])
    np.testing.assert_array_equal(validation[..., 0], images[perm[359:599]])
    np.testing.assert_array_equal(train[..., 0], images[perm[599:]])
    parts = [perm[:359], perm[359:599], perm[599:]]
    assert sorted(np.concatenate(parts)) == list(range(1797))  # disjoint, all
    assert train.min() == 0 and train.max() == 16


def test_dequantised_values_stay_in_their_bin(dd):
    x = np.arange(17).reshape(1, 17)
    y = dd._dequantize(np.repeat(x, 100, 0), np.random.default_rng(0))
    assert y.dtype == np.float32
    assert np.all(np.floor(y * 17 + 1e-6) == x)  # float32 slack at bin edges


def _uniform(high):
    """The uniform density on [0, high)^64, event shape [8, 8, 1]."""
    return tfd.Independent(
        tfd.Uniform(np.zeros([8, 8, 1], np.float32),
                    np.full([8, 8, 1], high, np.float32)), 3)


def test_protocol_bits_of_densities_known_exactly(dd):
    """A model uniform on [0, 1)^64 scores log2(17) bits/dim in 17-level
    units whatever its pixel units; one uniform on [0, 1/2)^64 (density
    2^64) scores one bit less."""
    _, validation, _ = dd.load_split()
    y = dd._dequantize(validation[:32], np.random.default_rng(0))
    assert y.max() < 1.0
    cases = [
        (17.0, 17, y, LOG2_17),          # uniform on [0, 17): p01 = 1
        (256.0, 256, y, LOG2_17),        # uniform on [0, 256): p01 = 1 too
        (8.5, 17, y / 2, LOG2_17 - 1),   # uniform on [0, 8.5): p01 = 2^64
    ]
    for high, scale, points, expected in cases:
        model = dd.Model("uniform", _uniform(high), scale, {})
        bits = dd.protocol_bits(model, points)
        assert bits.shape == (32,)
        # float32 log-probs of ~350 nats: ~3e-5 nats of rounding, /44 in bits
        np.testing.assert_allclose(bits, expected, atol=1e-5,
                                   err_msg=f"uniform [0, {high}), scale {scale}")


@pytest.mark.parametrize("scale", [17, 256])
def test_evaluate_checks_the_library_units(dd, scale):
    """`evaluate` on a uniform model over [0, scale): the protocol's
    log2(17), while the library's own bits/dim is log2(scale) (the check
    relating the two must hold for both pixel units)."""
    dist = tfd.TransformedDistribution(
        tfd.Sample(tfd.Uniform(0.0, 1.0), [8, 8, 1]), tfb.Scale(float(scale)))
    model = dd.Model("uniform", dist, scale, {})
    _, _, test = dd.load_split()
    out = dd.evaluate(model, test[:64], draws=2)
    assert out["test_bits_per_dim"] == pytest.approx(LOG2_17, abs=1e-5)
    own = dd.tfp_flows.bits_per_dim(dist, test[:4], seed=0).numpy()
    np.testing.assert_allclose(own, math.log2(scale), atol=1e-5)


def test_selection_picks_the_lowest_validation_candidate(dd):
    grid = {"plain": {250: 3.0, 500: 2.5, 750: 2.6},
            "ema 0.99": {250: 3.1, 500: 2.4, 750: 2.45},
            "ema 0.995": {250: 3.2, 500: float("nan"), 750: 2.41},
            "ema 0.999": {250: 4.0, 500: 3.0, 750: 2.7}}
    assert dd.select(grid) == ("ema 0.99", 500)
    grid["ema 0.999"][750] = 2.39
    assert dd.select(grid) == ("ema 0.999", 750)
    # non-finite candidates are skipped
    grid["ema 0.995"][250] = float("-inf")
    assert dd.select(grid) == ("ema 0.999", 750)
    # steps as JSON strings, as stored in the results file
    as_json = {k: {str(n): v for n, v in row.items()} for k, row in grid.items()}
    assert dd.select(as_json) == ("ema 0.999", 750)


def test_selection_ties(dd):
    # fewer steps first, then plain before EMA and the smaller decay first
    grid = {"ema 0.999": {250: 2.0, 500: 2.0}, "ema 0.99": {500: 2.0},
            "plain": {500: 2.0, 750: 2.0}}
    assert dd.select(grid) == ("ema 0.999", 250)
    del grid["ema 0.999"][250]
    assert dd.select(grid) == ("plain", 500)
    del grid["plain"][500]
    assert dd.select(grid) == ("ema 0.99", 500)
    with pytest.raises(ValueError, match="no finite"):
        dd.select({"plain": {250: float("nan")}})
