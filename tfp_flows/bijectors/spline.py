"""Neural spline coupling (Durkan et al., 2019): monotone rational-quadratic
splines as the coupling transform.

The spline itself is written here in TensorFlow ops (vectorised over any
batch of splines, XLA-compatible): :func:`spline_knots` turns raw network
outputs into knots and derivatives, :func:`rational_quadratic_spline`
evaluates the spline or its inverse with the log-derivative.
`SplineCoupling` plugs them into the package's coupling machinery, so it
works with checkerboard and channel masks, any coupling network, and the
reversible gradient.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from tfp_flows.bijectors.coupling import Coupling
from tfp_flows.typing import DTypeLike, TensorLike

__all__ = ["SplineCoupling", "rational_quadratic_spline", "spline_knots"]

#: Default minimum bin width and height (as a fraction of the interval
#: ``2 * bound``) and minimum derivative at the knots.
DEFAULT_MIN_BIN_SIZE = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def _derivative_offset(min_derivative: float) -> float:
    """``softplus^-1(1 - min_derivative)``: the shift that makes a zero raw
    derivative give a derivative of 1."""
    return math.log(math.expm1(1.0 - min_derivative))


def _knot_positions(raw: tf.Tensor, bound: float, min_size: float) -> tf.Tensor:
    """Knots ``[..., K + 1]`` from ``K`` raw bin sizes; ends exactly at +-bound."""
    num_bins = raw.shape[-1]
    # Softmax on a matrix: TensorFlow's CPU kernel rejects rank > 5.
    flat = tf.reshape(raw, [-1, num_bins])
    sizes = min_size + (1.0 - min_size * num_bins) * tf.nn.softmax(flat, axis=-1)
    inner = 2.0 * bound * tf.math.cumsum(sizes[:, :-1], axis=-1) - bound
    end = tf.ones_like(flat[:, :1]) * bound
    knots = tf.concat([-end, inner, end], axis=-1)
    return tf.reshape(knots, tf.concat([tf.shape(raw)[:-1], [num_bins + 1]], 0))


def spline_knots(raw_widths: tf.Tensor, raw_heights: tf.Tensor,
                 raw_derivatives: tf.Tensor, bound: float, *,
                 min_bin_width: float = DEFAULT_MIN_BIN_SIZE,
                 min_bin_height: float = DEFAULT_MIN_BIN_SIZE,
                 min_derivative: float = DEFAULT_MIN_DERIVATIVE,
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Knots and knot derivatives of a spline on ``[-B, B]`` from raw values.

    ``w = m_w + (1 - K m_w) softmax(raw_widths)`` (fractions of ``2B``; the
    same for heights) and
    ``d = m_d + softplus(raw_derivatives + softplus^-1(1 - m_d))``, with the
    two boundary derivatives fixed to 1 (linear tails of slope 1). Zero raw
    values give ``K`` equal bins and derivatives 1: the identity.

    Args:
      raw_widths: ``[..., K]`` unconstrained bin widths.
      raw_heights: ``[..., K]`` unconstrained bin heights.
      raw_derivatives: ``[..., K - 1]`` unconstrained interior derivatives.
      bound: B > 0; the spline maps ``[-B, B]`` onto itself.
      min_bin_width: minimum width of a bin as a fraction of ``2B``.
      min_bin_height: minimum height of a bin as a fraction of ``2B``.
      min_derivative: minimum derivative at a knot.

    Returns:
      ``(knots_x, knots_y, derivatives)``, each ``[..., K + 1]``, with
      ``knots_x[..., 0] = knots_y[..., 0] = -B``, ``knots_x[..., K] =
      knots_y[..., K] = B`` and ``derivatives[..., 0] = derivatives[..., K]
      = 1``.
    """
    knots_x = _knot_positions(raw_widths, bound, min_bin_width)
    knots_y = _knot_positions(raw_heights, bound, min_bin_height)
    inner = min_derivative + tf.nn.softplus(
        raw_derivatives + _derivative_offset(min_derivative))
    one = tf.ones_like(inner[..., :1])
    return knots_x, knots_y, tf.concat([one, inner, one], axis=-1)


def rational_quadratic_spline(x: tf.Tensor, knots_x: tf.Tensor, knots_y: tf.Tensor,
                              derivatives: tf.Tensor, bound: float, *,
                              inverse: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """Monotone rational-quadratic spline (Gregory & Delbourgo, 1982) with
    identity tails, elementwise.

    In bin ``k`` (``x_k <= x <= x_{k+1}``), with ``w_k = x_{k+1} - x_k``,
    ``h_k = y_{k+1} - y_k``, ``s_k = h_k / w_k``, ``xi = (x - x_k) / w_k``::

        g(x) = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / D
        D = s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)
        g'(x) = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2) / D^2

    and ``g(x) = x`` outside ``[-B, B]``. The inverse solves
    ``a xi^2 + b xi + c = 0`` for ``xi`` in ``[0, 1]`` with the stable root
    ``xi = 2c / (-b - sqrt(b^2 - 4ac))``, where, with ``dy = y - y_k``,
    ``a = h_k (s_k - d_k) + dy (d_{k+1} + d_k - 2 s_k)``,
    ``b = h_k d_k - dy (d_{k+1} + d_k - 2 s_k)`` and ``c = -s_k dy``.

    Args:
      x: ``[...]`` points (``y`` values when `inverse`), one per spline.
      knots_x: ``[..., K + 1]`` increasing knot abscissae from ``-B`` to
        ``B``; the leading shape is that of `x` (no broadcasting).
      knots_y: ``[..., K + 1]`` increasing knot ordinates from ``-B`` to ``B``.
      derivatives: ``[..., K + 1]`` positive derivatives at the knots (1 at
        both ends for continuous derivatives at the tails).
      bound: B, the end of the spline's interval.
      inverse: False: ``(g(x), log g'(x))``; True: ``(g^-1(x),
        log (g^-1)'(x))``.

    Returns:
      ``(value, log_derivative)``, both ``[...]``.
    """
    if inverse:
        lookup, target = knots_y, knots_x
    else:
        lookup, target = knots_x, knots_y
    shape = tf.shape(x)
    num_knots = lookup.shape[-1] if lookup.shape[-1] is not None else tf.shape(lookup)[-1]
    # Flatten to [M] points and [M, K + 1] knots: a rank-independent gather.
    v = tf.reshape(x, [-1])
    lookup = tf.reshape(lookup, [-1, num_knots])
    target = tf.reshape(target, [-1, num_knots])
    derivatives = tf.reshape(derivatives, [-1, num_knots])
    inside = (v >= -bound) & (v <= bound)
    v_in = tf.clip_by_value(v, -bound, bound)
    # Bin index: the number of interior knots at or below the point.
    index = tf.reduce_sum(
        tf.cast(v_in[:, None] >= lookup[:, 1:-1], tf.int32), axis=-1)[:, None]
    index_next = index + 1

    def pick(table: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
        return tf.gather(table, i, axis=1, batch_dims=1)[:, 0]

    lo, hi = pick(lookup, index), pick(lookup, index_next)
    target_lo, target_hi = pick(target, index), pick(target, index_next)
    d_lo, d_hi = pick(derivatives, index), pick(derivatives, index_next)
    if inverse:
        y_k, h, x_k, w = lo, hi - lo, target_lo, target_hi - target_lo
    else:
        x_k, w, y_k, h = lo, hi - lo, target_lo, target_hi - target_lo
    s = h / w
    slope_sum = d_lo + d_hi - 2.0 * s
    if inverse:
        dy = v_in - y_k
        a = h * (s - d_lo) + dy * slope_sum
        b = h * d_lo - dy * slope_sum
        c = -s * dy
        discriminant = tf.maximum(b * b - 4.0 * a * c, 0.0)
        xi = 2.0 * c / (-b - tf.sqrt(discriminant))
        xi = tf.clip_by_value(xi, 0.0, 1.0)
        value = x_k + w * xi
    else:
        xi = tf.clip_by_value((v_in - x_k) / w, 0.0, 1.0)
    xi_1m = 1.0 - xi
    t = xi * xi_1m
    denominator = s + slope_sum * t
    if not inverse:
        value = y_k + h * (s * xi * xi + d_lo * t) / denominator
    numerator = s * s * (d_hi * xi * xi + 2.0 * s * t + d_lo * xi_1m * xi_1m)
    log_derivative = tf.math.log(numerator) - 2.0 * tf.math.log(denominator)
    if inverse:
        log_derivative = -log_derivative
    value = tf.where(inside, value, v)
    log_derivative = tf.where(inside, log_derivative, tf.zeros_like(log_derivative))
    return tf.reshape(value, shape), tf.reshape(log_derivative, shape)


class SplineCoupling(Coupling):
    """Rational-quadratic neural spline coupling (Durkan et al., 2019).

    Data -> latent (``inverse``, the paper's f), for each transformed
    dimension ``i`` (``b_i = 0``)::

        y_i = g(x_i; theta_i(b * x)),    y_j = x_j where b_j = 1
        log|det dy/dx| = sum_i log g'(x_i; theta_i)

    where ``g`` is a monotone rational-quadratic spline with ``K = num_bins``
    bins on ``[-B, B]`` (``B = bound``) and the identity outside (linear
    tails of slope 1). In bin ``k``, with knots ``(x_k, y_k)``, derivatives
    ``d_k``, ``s_k = h_k / w_k`` and ``xi = (x - x_k) / w_k``::

        g(x) = y_k + h_k (s_k xi^2 + d_k xi (1 - xi))
                     / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))

    latent -> data (``forward``) inverts ``g`` bin by bin with the stable
    root of a quadratic (see :func:`rational_quadratic_spline`).

    The network outputs ``3K - 1`` raw values per transformed dimension:
    ``K`` widths, ``K`` heights and ``K - 1`` interior derivatives (the two
    boundary derivatives are 1). Widths and heights are softmaxed with a
    minimum bin size, derivatives are ``m + softplus(h + softplus^-1(1 - m))``
    (see :func:`spline_knots`), so zero raw outputs are equal bins with
    derivative 1, i.e. the identity: with the default networks (last layer
    zero-initialised) a fresh layer is the identity up to float rounding.

    Args:
      mask: 0/1 array of the event shape (``[D]`` or ``[H, W, C]``);
        1 = conditioning part. See :mod:`tfp_flows.masks`.
      network: Keras layer or callable mapping the conditioning part
        ``[N, *cond_shape]`` to ``[N, *cond_shape[:-1], (3K - 1) * k]``
        (``k`` transformed channels in split mode, all channels for a
        checkerboard), parameter-major: channels ``[j * k, (j + 1) * k)``
        hold raw parameter ``j`` (widths ``0..K-1``, heights ``K..2K-1``,
        derivatives ``2K..3K-2``); or a tuple of ``3K - 1`` tensors of
        ``k`` channels. Default: an MLP (vectors) or Glow's CNN (images)
        whose last layer starts at zero.
      num_bins: K >= 2, the number of spline bins.
      bound: B > 0; the spline acts on ``[-B, B]``. Inputs of the couplings
        of Glow (after ActNorm) and RealNVP (after the logit preprocessing)
        are roughly standardised, so the default B = 3 covers most values.
      hidden: hidden width of the default network.
      min_bin_width: minimum bin width as a fraction of ``2B``
        (``< 1 / num_bins``).
      min_bin_height: minimum bin height as a fraction of ``2B``
        (``< 1 / num_bins``).
      min_derivative: minimum derivative at the interior knots, in (0, 1).
      max_log_scale: if set (``c > 0``), each transformed entry is first
        mapped by an affine ``u = x * s + t`` with ``log s = c tanh(h / c)``
        (two more network outputs per entry, after the spline's), then by
        the spline: the layer can scale values by up to ``e^c`` as well as
        reshape ``[-B, B]``, which a spline alone (the identity outside)
        cannot. None: the plain spline.
      context_channels: channels of a ``conditional_input`` context given
        on every call (0: not conditional); see
        :mod:`tfp_flows.bijectors.coupling`.
      dtype: float dtype of the parameters and inputs.
      validate_args: TFP's flag (unused).
      name: name of the bijector; the default network is ``f'{name}_net'``.

    Raises:
      ValueError: for ``num_bins < 2``, ``bound <= 0``, minimum sizes out
        of range, ``max_log_scale <= 0``, or a mask that is all 0s or all 1s.

    Example:
      >>> from tfp_flows import masks
      >>> layer = SplineCoupling(masks.channel([4]), num_bins=4, hidden=8)
      >>> x = tf.constant([[0.5, -1.0, 2.0, 4.0]])
      >>> bool(tf.reduce_all(tf.abs(layer.forward(layer.inverse(x)) - x) < 1e-5))
      True
    """

    def __init__(self, mask: TensorLike,
                 network: Callable[[tf.Tensor], Any] | None = None, *,
                 num_bins: int = 8, bound: float = 3.0, hidden: int | None = None,
                 min_bin_width: float = DEFAULT_MIN_BIN_SIZE,
                 min_bin_height: float = DEFAULT_MIN_BIN_SIZE,
                 min_derivative: float = DEFAULT_MIN_DERIVATIVE,
                 max_log_scale: float | None = None,
                 context_channels: int = 0,
                 dtype: DTypeLike = tf.float32, validate_args: bool = False,
                 name: str = "spline_coupling") -> None:
        parameters = dict(locals())
        if (isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral)
                or num_bins < 2):
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}.")
        num_bins = int(num_bins)
        if (isinstance(bound, bool) or not isinstance(bound, numbers.Real)
                or not (math.isfinite(bound) and bound > 0)):
            raise ValueError(f"bound must be a positive finite number, got {bound!r}.")
        bound = float(bound)
        for what, value in (("min_bin_width", min_bin_width),
                            ("min_bin_height", min_bin_height)):
            if not 0 < value < 1.0 / num_bins:
                raise ValueError(f"{what} must be in (0, 1/num_bins) = "
                                 f"(0, {1.0 / num_bins:g}), got {value}.")
        if not 0 < min_derivative < 1:
            raise ValueError(f"min_derivative must be in (0, 1), got {min_derivative}.")
        self._num_bins: int = num_bins
        self._bound: float = bound
        self._min_bin_width: float = float(min_bin_width)
        self._min_bin_height: float = float(min_bin_height)
        self._min_derivative: float = float(min_derivative)
        if max_log_scale is not None and not (
                isinstance(max_log_scale, numbers.Real) and not isinstance(max_log_scale, bool)
                and math.isfinite(max_log_scale) and max_log_scale > 0):
            raise ValueError(f"max_log_scale must be None or a positive finite number, "
                             f"got {max_log_scale!r}.")
        self._max_log_scale: float | None = (
            None if max_log_scale is None else float(max_log_scale))
        # Read by `Coupling` to size the network and split its output.
        self._params_per_dim = self.params_per_entry(num_bins, max_log_scale)
        super().__init__(mask, network, hidden, parameters, name,
                         tf.as_dtype(dtype), validate_args,
                         context_channels=context_channels)

    @staticmethod
    def params_per_entry(num_bins: int, max_log_scale: float | None = None) -> int:
        """Network outputs per transformed entry: ``3K - 1`` for the spline
        (K widths, K heights, K - 1 interior derivatives), plus 2 (shift and
        raw log-scale) with an affine pre-map (`max_log_scale`)."""
        return 3 * int(num_bins) - 1 + (2 if max_log_scale is not None else 0)

    @property
    def num_bins(self) -> int:
        """K, the number of spline bins."""
        return self._num_bins

    @property
    def bound(self) -> float:
        """B: the spline acts on ``[-B, B]``, the identity outside."""
        return self._bound

    def spline_parameters(self, params: Sequence[tf.Tensor],
                          ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(knots_x, knots_y, derivatives)``, each ``[..., K + 1]``, from the
        ``3K - 1`` raw network outputs (each ``[...]``)."""
        k = self._num_bins
        return spline_knots(
            tf.stack(params[:k], axis=-1), tf.stack(params[k:2 * k], axis=-1),
            tf.stack(params[2 * k:], axis=-1), self._bound,
            min_bin_width=self._min_bin_width, min_bin_height=self._min_bin_height,
            min_derivative=self._min_derivative)

    def _couple(self, x: tf.Tensor, params: Sequence[tf.Tensor],
                inverse: bool) -> tuple[tf.Tensor, tf.Tensor]:
        spline = self.params_per_entry(self._num_bins)
        knots_x, knots_y, derivatives = self.spline_parameters(params[:spline])
        # The package's inverse (data -> latent) evaluates the spline g; its
        # forward (latent -> data) solves for g^-1.
        if self._max_log_scale is None:
            return rational_quadratic_spline(x, knots_x, knots_y, derivatives,
                                             self._bound, inverse=not inverse)
        shift, raw = params[spline], params[spline + 1]
        c = tf.cast(self._max_log_scale, raw.dtype)
        log_s = c * tf.tanh(raw / c)
        if inverse:  # data -> latent: u = x s + t, then g
            y, log_det = rational_quadratic_spline(x * tf.exp(log_s) + shift, knots_x,
                                                   knots_y, derivatives, self._bound)
            return y, log_det + log_s
        u, log_det = rational_quadratic_spline(x, knots_x, knots_y, derivatives,
                                               self._bound, inverse=True)
        return (u - shift) * tf.exp(-log_s), log_det - log_s
