"""Bad input raises a ValueError that names the problem, never a TF stack."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors as B
from tfp_flows import masks, priors

tfb = tfp.bijectors


def test_coupling_rejects_a_mask_that_does_not_match_the_event():
    layer = B.AffineCoupling(masks.checkerboard([4, 4, 2]), hidden=4)
    with pytest.raises(ValueError, match=r"event shape \(4, 4, 3\), expected \(4, 4, 2\)"):
        layer.inverse(tf.zeros([1, 4, 4, 3]))
    with pytest.raises(ValueError, match="rank"):
        layer.forward(tf.zeros([4, 2]))


@pytest.mark.parametrize("mask, match", [
    (np.ones([4]), "both 0s"),
    (np.array([0, 1, 2, 1]), "only 0 and 1"),
    (np.float32(1.0), "scalar"),
])
def test_coupling_rejects_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        B.AdditiveCoupling(mask)


def test_user_network_with_wrong_output_is_reported_at_construction():
    with pytest.raises(ValueError, match="expected"):
        B.AffineCoupling(masks.channel([4]), network=lambda h: tf.concat([h, h, h], -1))


def test_squeeze_rejects_sizes_not_divisible_by_the_factor():
    sq = B.Squeeze(2)
    with pytest.raises(ValueError, match="5x4 is not divisible by the squeeze factor 2"):
        sq.forward(tf.zeros([1, 5, 4, 1]))
    with pytest.raises(ValueError, match="not divisible"):
        sq.forward_event_shape([4, 6, 1]) and sq.forward_event_shape([3, 3, 1])
    with pytest.raises(ValueError, match="channels are not divisible"):
        sq.inverse(tf.zeros([1, 2, 2, 3]))
    with pytest.raises(ValueError, match="not an image"):
        sq.forward(tf.zeros([4, 4]))


@pytest.mark.parametrize("make, shape, match", [
    (lambda: B.ActNorm(3), [2, 4, 4, 2], "2 channels"),
    (lambda: B.ActNorm(3), [3], "rank"),
    (lambda: B.InvertibleConv1x1(4), [2, 3, 3, 3], "3 channels"),
    (lambda: B.DiagonalScaling([5]), [2, 6], r"event shape \(6,\)"),
    (lambda: priors.LearnedPrior(2), [1, 2, 2, 3], "3 channels"),
])
def test_layers_reject_wrong_event_shapes(make, shape, match):
    with pytest.raises(ValueError, match=match):
        make().inverse(tf.zeros(shape))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="num_channels"):
        B.ActNorm(0)
    with pytest.raises(ValueError, match="event_ndims"):
        B.InvertibleConv1x1(3, event_ndims=2)
    with pytest.raises(ValueError, match="factor"):
        B.Squeeze(1)
    with pytest.raises(ValueError, match="scale_fn"):
        B.AffineCoupling(masks.channel([4]), scale_fn="softplus")
    with pytest.raises(ValueError, match="alpha"):
        B.PixelLogit(256, alpha=0.7)
    with pytest.raises(ValueError, match="unique"):
        B.FlowChain([B.ActNorm(2, name="a"), B.ActNorm(2, name="a")])


@pytest.mark.parametrize("kwargs, match", [
    (dict(bound=0.0), "bound must be a positive"),
    (dict(bound=-3.0), "bound must be a positive"),
    (dict(bound=float("inf")), "bound must be a positive"),
    (dict(num_bins=1), "num_bins must be an integer >= 2"),
    (dict(num_bins=0), "num_bins must be an integer >= 2"),
    (dict(num_bins=4.5), "num_bins must be an integer >= 2"),
    (dict(num_bins=8, min_bin_width=0.125), r"min_bin_width must be in \(0, 1/num_bins\)"),
    (dict(min_bin_height=0.0), "min_bin_height"),
    (dict(min_derivative=1.0), r"min_derivative must be in \(0, 1\)"),
    (dict(mask=np.zeros([4])), r"both 0s .* got all 0"),  # nothing to condition on
    (dict(mask=np.ones([2, 2, 2])), r"both 0s .* got all 1"),  # nothing to transform
])
def test_spline_coupling_rejects_bad_arguments(kwargs, match):
    kwargs = {"mask": masks.channel([4]), "hidden": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        B.SplineCoupling(**kwargs)


def test_spline_network_with_wrong_output_is_reported_at_construction():
    # 3 * num_bins - 1 = 11 raw values per transformed entry are expected.
    with pytest.raises(ValueError, match=r"expected 22 output channels"):
        B.SplineCoupling(masks.channel([4]), num_bins=4,
                         network=lambda h: tf.concat([h] * 10, -1))


def test_class_conditional_prior_needs_labels():
    prior = priors.LearnedPrior(2, num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        prior.inverse(tf.zeros([1, 2, 2, 2]))
    with pytest.raises(ValueError, match="integers"):
        prior.inverse(tf.zeros([1, 2, 2, 2]), labels=tf.zeros([1]))


def test_actnorm_refuses_to_initialise_from_nan_or_empty_batches():
    with pytest.raises(ValueError, match="NaN or Inf"):
        B.ActNorm(2).initialize(tf.constant([[1.0, np.nan], [0.0, 1.0]]) [None, None])
    with pytest.raises(ValueError, match="empty"):
        B.ActNorm(2, event_ndims=1).initialize(tf.zeros([0, 2]))


def test_chain_checks_the_data_shape_first():
    chain = B.FlowChain([B.ActNorm(2)], data_event_shape=(4, 4, 2), name="model")
    with pytest.raises(ValueError, match=r"'model' expects data of event shape \(4, 4, 2\)"):
        chain.inverse(tf.zeros([1, 8, 8, 2]))
