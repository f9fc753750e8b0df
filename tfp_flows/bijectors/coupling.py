"""Coupling layers: NICE's additive coupling, RealNVP/Glow's affine coupling.

Both follow the mask convention of :mod:`tfp_flows.masks`: ``b = 1`` marks the
conditioning part, ``b = 0`` the transformed part. ``inverse`` is the papers'
data -> latent map f; ``forward`` is its inverse (sampling).

When the mask only varies along the last axis (a channel mask, or any vector
mask) the layer gathers the two halves, so the network sees only the
conditioning channels and predicts parameters only for the transformed ones,
as in Glow. Otherwise (a checkerboard on images) it works with masked tensors,
as in RealNVP.

Both derive from `Coupling`, the shared base class, as does the neural spline
coupling (:class:`tfp_flows.bijectors.spline.SplineCoupling`).

**Conditional couplings.** With ``context_channels=c > 0`` the network also
sees a context tensor, passed on every call as
``forward(x, conditional_input=h)`` (TFP's keyword for conditional
bijectors): ``h`` has the batch shape of ``x`` and event shape
``[H, W, c]`` for images or ``[c]`` for vectors, and is concatenated to the
network's input along the last axis. The conditional density flow of
:class:`tfp_flows.dequantization.VariationalDequantization` is built this way.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfp_flows import networks as networks_lib
from tfp_flows.bijectors.base import FlowBijector, as_mask, flatten_batch, sum_event
from tfp_flows.typing import DTypeLike, TensorLike

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling", "SCALE_FUNCTIONS", "check_scale_fn"]


_LOG_SIGMOID_2 = float(np.log(1.0 / (1.0 + np.exp(-2.0))))


def _log_scale_sigmoid(h):
    return tf.math.log_sigmoid(h + 2.0) - _LOG_SIGMOID_2


def _log_scale_exp_tanh(h):
    return tf.tanh(h)


def _log_scale_exp(h):
    return h


#: Maps raw network output h to log s. 'sigmoid' is Glow's s = sigmoid(h + 2)
#: divided by sigmoid(2) (so that h = 0 is the identity), 'exp_tanh' is
#: RealNVP's s = exp(tanh(h)), 'exp' is the unbounded s = exp(h).
SCALE_FUNCTIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "sigmoid": _log_scale_sigmoid,
    "exp_tanh": _log_scale_exp_tanh,
    "exp": _log_scale_exp,
}


def check_scale_fn(name: str) -> None:
    """Raises a ValueError unless `name` is a key of `SCALE_FUNCTIONS`."""
    if name not in SCALE_FUNCTIONS:
        raise ValueError(f"scale_fn must be one of {sorted(SCALE_FUNCTIONS)}, got {name!r}.")


class Coupling(FlowBijector):
    """Base class of the coupling layers: mask analysis, network construction
    and calls, split/masked modes and the fused reversible step.

    A subclass sets ``_params_per_dim`` (network outputs per transformed
    entry, before calling ``__init__``) and implements
    ``_couple(x, params, inverse) -> (new, log_det)``: the elementwise
    transform of `x` given the ``_params_per_dim`` parameter tensors (each of
    `x`'s shape), data -> latent when `inverse`, with its elementwise
    log-determinant (None for a volume-preserving transform).

    A conditional coupling (``context_channels > 0``) takes
    ``conditional_input=`` on every call (see the module docstring).
    """

    _params_per_dim = 1
    # set by __init__ from the mask
    _context_channels: int
    _mask_np: np.ndarray
    _event_shape_np: tuple[int, ...]
    _split: bool
    _cond_idx: np.ndarray
    _trans_idx: np.ndarray
    _cond_first: bool
    _trans_first: bool
    _merge_perm: np.ndarray
    _cond_shape: tuple[int, ...]
    _out_channels: int
    _network: Callable[[tf.Tensor], Any]

    def __init__(self, mask: TensorLike, network: Callable[[tf.Tensor], Any] | None,
                 hidden: int | None, parameters: dict[str, Any], name: str,
                 dtype: tf.DType, validate_args: bool,
                 is_constant_jacobian: bool = False,
                 context_channels: int = 0) -> None:
        """Analyses `mask` and builds (or checks) the network.

        Args:
          mask: 0/1 array of the event shape; 1 = conditioning part.
          network: the coupling network, or None for the default one.
          hidden: hidden width of the default network.
          parameters: the subclass's constructor arguments (TFP's
            ``parameters``).
          name: name of the bijector.
          dtype: float dtype of the parameters and inputs.
          validate_args: TFP's flag.
          is_constant_jacobian: True for volume-preserving couplings.
          context_channels: channels of the ``conditional_input`` context
            (0: not conditional).
        """
        if (isinstance(context_channels, bool) or
                not isinstance(context_channels, numbers.Integral) or
                context_channels < 0):
            raise ValueError("context_channels must be an integer >= 0, got "
                             f"{context_channels!r}.")
        self._context_channels = int(context_channels)
        mask = as_mask(mask)
        self._mask_np = mask
        self._event_shape_np = mask.shape
        ndims = mask.ndim
        # Split mode when the mask is constant along every axis but the last.
        last = mask.reshape(-1, mask.shape[-1])
        self._split = bool(np.all(last == last[:1]))
        if self._split:
            flags = last[0]
            self._cond_idx = np.flatnonzero(flags == 1)
            self._trans_idx = np.flatnonzero(flags == 0)
            order = np.concatenate([self._cond_idx, self._trans_idx])
            self._cond_first = bool(np.array_equal(order, np.arange(len(flags))))
            self._trans_first = bool(np.array_equal(
                np.concatenate([self._trans_idx, self._cond_idx]),
                np.arange(len(flags))))
            self._merge_perm = np.argsort(order)
            cond_shape = mask.shape[:-1] + (len(self._cond_idx),)
            out_channels = self._params_per_dim * len(self._trans_idx)
        else:
            cond_shape = mask.shape
            out_channels = self._params_per_dim * mask.shape[-1]
        self._cond_shape = cond_shape
        self._out_channels = out_channels
        if network is None:
            network = networks_lib.default_network(
                ndims, out_channels, hidden=hidden,
                dtype=networks_lib.policy_for(dtype), name=f"{name}_net")
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network)}.")
        self._network = network
        self._build_network(dtype)
        layers = [network] if isinstance(network, keras.layers.Layer) else []
        super().__init__(event_ndims=ndims, parameters=parameters, name=name,
                         layers=layers, dtype=dtype,
                         is_constant_jacobian=is_constant_jacobian,
                         validate_args=validate_args)

    @property
    def mask(self) -> np.ndarray:
        """The 0/1 mask (numpy, event shape); 1 = conditioning."""
        return self._mask_np

    @property
    def network(self) -> Callable[[tf.Tensor], Any]:
        """The coupling network (a Keras layer, or the callable given)."""
        return self._network

    @property
    def context_channels(self) -> int:
        """Channels of the ``conditional_input`` context (0: not conditional)."""
        return self._context_channels

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """Event shape of ``conditional_input``, or None when not conditional."""
        if not self._context_channels:
            return None
        return tuple(self._event_shape_np[:-1]) + (self._context_channels,)

    def _build_network(self, dtype):
        probe = tf.zeros((1,) + tuple(self._cond_shape), dtype=dtype)
        context = (None if self.context_shape is None else
                   tf.zeros((1,) + self.context_shape, dtype=dtype))
        out = self._call_network(probe, context)
        for o in out:
            expected = (1,) + tuple(self._cond_shape[:-1]) + (
                self._out_channels // self._params_per_dim,)
            if tuple(o.shape) != expected:
                raise ValueError(
                    f"the coupling network maps {tuple(probe.shape)} to "
                    f"{tuple(o.shape)} per parameter; expected {expected} "
                    f"(output channels {self._out_channels} in total).")

    def _call_network(self, cond, context=None):
        """Runs the network (on ``cond``, with ``context`` appended along the
        last axis when given); returns `_params_per_dim` float tensors."""
        inputs = cond if context is None else tf.concat([cond, context], axis=-1)
        out = self._network(inputs)
        if isinstance(out, (tuple, list)):
            parts = [tf.cast(o, cond.dtype) for o in out]
        else:
            out = tf.cast(out, cond.dtype)
            channels = out.shape[-1]
            if channels is not None and channels % self._params_per_dim:
                raise ValueError(
                    f"the coupling network returned {channels} channels, not "
                    f"a multiple of the {self._params_per_dim} parameters per "
                    f"transformed entry; expected {self._out_channels} output "
                    f"channels in total.")
            parts = (tf.split(out, self._params_per_dim, axis=-1)
                     if self._params_per_dim > 1 else [out])
        if len(parts) != self._params_per_dim:
            raise ValueError(f"the coupling network returned {len(parts)} "
                             f"tensors; expected {self._params_per_dim}.")
        return parts

    # -- split / merge ------------------------------------------------------
    def _split_parts(self, x):
        # One SplitV, not two strided slices: its gradient is one concat,
        # where two slices' gradients are two zero-padded full-size tensors
        # and their sum (about 8% of a Glow training step's op time on CPU).
        if self._cond_first:
            n = len(self._cond_idx)
            cond, trans = tf.split(x, [n, len(self._trans_idx)], axis=-1)
            return cond, trans
        if self._trans_first:
            n = len(self._trans_idx)
            trans, cond = tf.split(x, [n, len(self._cond_idx)], axis=-1)
            return cond, trans
        return (tf.gather(x, self._cond_idx, axis=-1),
                tf.gather(x, self._trans_idx, axis=-1))

    def _merge_parts(self, cond, trans):
        if self._cond_first:
            return tf.concat([cond, trans], axis=-1)
        if self._trans_first:
            return tf.concat([trans, cond], axis=-1)
        return tf.gather(tf.concat([cond, trans], axis=-1), self._merge_perm,
                         axis=-1)

    def _params(self, cond, context=None):
        """Network parameters for a conditioning tensor of any batch shape
        (and its context, of the same batch shape)."""
        ndims = len(self._event_shape_np)
        flat, unflatten = flatten_batch(cond, ndims)
        if context is not None:
            context = flatten_batch(context, ndims)[0]
        return [unflatten(p) for p in self._call_network(flat, context)]

    def _context(self, kwargs, x):
        """The checked ``conditional_input`` of a call (None if unconditional)."""
        context = kwargs.get("conditional_input")
        if not self._context_channels:
            if context is not None:
                raise ValueError(
                    f"{self.name} is not conditional (context_channels=0) but "
                    "got conditional_input=.")
            return None
        expected = self.context_shape
        assert expected is not None  # conditional
        if context is None:
            raise ValueError(
                f"{self.name} is conditional: pass conditional_input= of shape "
                f"[*batch_shape, {', '.join(map(str, expected))}].")
        context = tf.cast(tf.convert_to_tensor(context), x.dtype)
        ndims = len(expected)
        shape, x_shape = context.shape, x.shape
        if shape.rank is not None and x_shape.rank is not None and (
                shape.rank != x_shape.rank or
                not shape[-ndims:].is_compatible_with(expected) or
                not shape[:-ndims].is_compatible_with(x_shape[:-ndims])):
            raise ValueError(
                f"{self.name}: conditional_input has shape {shape}; expected "
                f"[*batch_shape, {', '.join(map(str, expected))}] with the "
                f"input's batch shape {x_shape[:-ndims]}.")
        return context

    def _transform(self, x, inverse, kwargs):
        self._check_event_shape(x, self._event_shape_np)
        ndims = len(self._event_shape_np)
        context = self._context(kwargs, x)
        if self._split:
            cond, trans = self._split_parts(x)
            params = self._params(cond, context)
            new, log_det = self._couple(trans, params, inverse)
            y = self._merge_parts(cond, new)
            return y, self._reduce_log_det(log_det, x, ndims)
        b = tf.constant(self._mask_np, dtype=x.dtype)
        params = self._params(x * b, context)
        new, log_det = self._couple(x, params, inverse)
        y = b * x + (1.0 - b) * new
        if log_det is not None:
            log_det = log_det * (1.0 - b)
        return y, self._reduce_log_det(log_det, x, ndims)

    def _reduce_log_det(self, log_det, x, ndims):
        if log_det is None:
            return self._zeros_batch(x)
        return sum_event(log_det, ndims)

    def _forward_and_log_det(self, x, **kwargs):
        return self._transform(x, inverse=False, kwargs=kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._transform(y, inverse=True, kwargs=kwargs)

    def _forward_event_shape(self, input_shape):
        return input_shape

    def _inverse_event_shape(self, output_shape):
        return output_shape

    # -- reversible gradients ------------------------------------------------
    @property
    def supports_reversible_step(self) -> bool:
        """True unless the coupling is conditional, or a subclass replaced
        the transform itself."""
        if self._context_channels:
            return False
        cls = type(self)
        return all(getattr(cls, m) is getattr(Coupling, m) for m in
                   ("_transform", "_forward_and_log_det",
                    "_inverse_and_log_det", "_params"))

    def reversible_step(
            self, y: tf.Tensor, dy: tf.Tensor, dldj: tf.Tensor | None = None, *,
            inverse: bool = True, event_ndims: int | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Variable], list[tf.Tensor | None]]:
        """`FlowBijector.reversible_step` with one network evaluation.

        The conditioning part ``c`` of `y` equals that of the input, so with
        ``y_t = g(x_t; theta(c))``: ``x_t = g^-1(y_t; theta(c))`` (not
        recorded), then one VJP of ``(g(x_t; theta(c)), log-det)`` with
        respect to ``c``, ``x_t`` and the network's variables.
        """
        ndims = len(self._event_shape_np) if event_ndims is None else event_ndims
        self._check_event_shape(y, self._event_shape_np)
        with tf.GradientTape() as tape:
            if self._split:
                cond, trans_out = self._split_parts(y)
                tape.watch(cond)
                params = self._params(cond)
                with tape.stop_recording():
                    second, _ = self._couple(trans_out, params, not inverse)
                tape.watch(second)
                new, log_det = self._couple(second, params, inverse)
                dy_cond, dy_second = self._split_parts(dy)
            else:
                b = tf.constant(self._mask_np, dtype=y.dtype)
                cond = y * b  # equals b * x exactly: b is 0/1
                tape.watch(cond)
                params = self._params(cond)
                with tape.stop_recording():
                    back, _ = self._couple(y, params, not inverse)
                    second = b * y + (1.0 - b) * back  # the whole input x
                tape.watch(second)
                new, log_det = self._couple(second, params, inverse)
                if log_det is not None:
                    log_det = log_det * (1.0 - b)
                dy_second = (1.0 - b) * dy
            targets, cotangents = [new], [dy_second]
            if log_det is not None and dldj is not None:
                targets.append(tf.broadcast_to(sum_event(log_det, ndims),
                                               tf.shape(dldj)))
                cotangents.append(dldj)
        variables = list(tape.watched_variables())
        grads = tape.gradient(targets, [cond, second] + variables,
                              output_gradients=cotangents)
        d_cond, d_second = (tf.zeros_like(s) if g is None else g
                            for s, g in zip((cond, second), grads[:2]))
        if self._split:
            return (self._merge_parts(cond, second),
                    self._merge_parts(dy_cond + d_cond, d_second),
                    variables, grads[2:])
        return second, b * dy + d_second + b * d_cond, variables, grads[2:]


class AdditiveCoupling(Coupling):
    """NICE's additive coupling layer (Dinh et al., 2014).

    Data -> latent (``inverse``, the paper's f)::

        y = x + (1 - b) * m(b * x)

    latent -> data (``forward``)::

        x = y - (1 - b) * m(b * y)

    Volume preserving: the log-determinant is exactly 0 in both directions.

    Args:
      mask: 0/1 array of the event shape (``[D]`` or ``[H, W, C]``);
        1 = conditioning part. See :mod:`tfp_flows.masks`.
      network: Keras layer or callable mapping the conditioning part to the
        shift ``m``. Shapes: ``[N, *cond_shape] -> [N, *cond_shape[:-1], k]``
        where ``k`` is the number of transformed channels (split mode) or the
        full channel count (checkerboard mode). Default: an MLP (vectors) or
        Glow's CNN (images) whose last layer starts at zero.
      hidden: hidden width of the default network.
      context_channels: channels of a ``conditional_input`` context given
        on every call (0: not conditional); see the module docstring.
      dtype: float dtype of the parameters and inputs.

    Example:
      >>> from tfp_flows import masks
      >>> layer = AdditiveCoupling(masks.checkerboard([4]), hidden=8)
      >>> x = tf.random.normal([2, 4])
      >>> bool(tf.reduce_all(layer.forward(layer.inverse(x)) == x))
      True
    """

    _params_per_dim = 1

    def __init__(self, mask: TensorLike,
                 network: Callable[[tf.Tensor], Any] | None = None, *,
                 hidden: int | None = None, context_channels: int = 0,
                 dtype: DTypeLike = tf.float32,
                 validate_args: bool = False, name: str = "additive_coupling") -> None:
        parameters = dict(locals())
        super().__init__(mask, network, hidden, parameters, name,
                         tf.as_dtype(dtype), validate_args,
                         is_constant_jacobian=True,
                         context_channels=context_channels)

    def _couple(self, x, params, inverse):
        (shift,) = params
        return (x + shift if inverse else x - shift), None


class AffineCoupling(Coupling):
    """RealNVP / Glow affine coupling layer (Dinh et al., 2016; Kingma &
    Dhariwal, 2018).

    Data -> latent (``inverse``, the paper's f)::

        y = b * x + (1 - b) * (x * s(b * x) + t(b * x))
        log|det dy/dx| = sum((1 - b) * log s)

    latent -> data (``forward``)::

        x = b * y + (1 - b) * (y - t(b * y)) / s(b * y)

    The network outputs ``(t, h)`` and ``s = scale_fn(h)``; the scale is
    bounded by default so that the layer stays well conditioned:

    * ``'sigmoid'`` (Glow): ``s = sigmoid(h + 2) / sigmoid(2)``, in
      (0, 1.14); Glow's bounded scale, normalised so that h = 0 is the
      identity;
    * ``'exp_tanh'`` (RealNVP): ``s = exp(tanh(h))``, in (1/e, e);
    * ``'exp'``: ``s = exp(h)``, unbounded (used by the learned split prior).

    The default network's last layer starts at zero, so ``t = 0`` and
    ``h = 0`` at initialisation: a fresh layer is exactly the identity.

    Args:
      mask: 0/1 array of the event shape; 1 = conditioning part.
      network: Keras layer or callable returning ``2 * k`` channels (shift,
        then raw scale) or a tuple ``(shift, raw_scale)``.
      scale_fn: ``'sigmoid'``, ``'exp_tanh'`` or ``'exp'``.
      hidden: hidden width of the default network.
      context_channels: channels of a ``conditional_input`` context given
        on every call (0: not conditional); see the module docstring.
      dtype: float dtype of the parameters and inputs.
    """

    _params_per_dim = 2

    def __init__(self, mask: TensorLike,
                 network: Callable[[tf.Tensor], Any] | None = None, *,
                 scale_fn: str = "sigmoid", hidden: int | None = None,
                 context_channels: int = 0,
                 dtype: DTypeLike = tf.float32, validate_args: bool = False,
                 name: str = "affine_coupling") -> None:
        parameters = dict(locals())
        check_scale_fn(scale_fn)
        self._scale_fn_name = scale_fn
        self._log_scale = SCALE_FUNCTIONS[scale_fn]
        super().__init__(mask, network, hidden, parameters, name,
                         tf.as_dtype(dtype), validate_args,
                         context_channels=context_channels)

    @property
    def scale_fn(self) -> str:
        """Name of the scale function (a key of `SCALE_FUNCTIONS`)."""
        return self._scale_fn_name

    def _couple(self, x, params, inverse):
        shift, raw = params
        log_s = self._log_scale(raw)
        if inverse:
            return x * tf.exp(log_s) + shift, log_s
        return (x - shift) * tf.exp(-log_s), -log_s
