"""Builders shared by the benchmarks: tfp_flows' Glow and TFP's `tfb.Glow`
with the same levels, steps and hidden width; and the timed training loop of
the one-process-per-measurement benchmarks (normflows_peer.py, onednn.py)."""

import time

import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows

tfb, tfd = tfp.bijectors, tfp.distributions

__all__ = ["ours_glow", "tfp_glow", "num_params", "set_threads", "train_images_per_second"]


def ours_glow(shape, levels, steps, hidden, **kwargs):
    """tfp_flows' Glow (affine couplings, LU 1x1 convs, learned priors)."""
    return tfp_flows.models.glow(shape, num_levels=levels, num_steps=steps,
                                 hidden_channels=hidden, seed=0, **kwargs)


def tfp_glow(shape, levels, steps, hidden):
    """TFP's own Glow with GlowDefaultNetwork(num_hidden=hidden) couplings and
    GlowDefaultExitNetwork exits, over a standard normal on its latent vector.

    TFP's Glow has no pixel preprocessing; its variables are created lazily,
    so the distribution is called once here.
    """
    glow = tfb.Glow(
        output_shape=shape, num_glow_blocks=levels, num_steps_per_block=steps,
        coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=hidden),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork)
    z_shape = glow.inverse_event_shape(shape)
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), z_shape), glow)
    dist.log_prob(tf.random.uniform((2,) + tuple(shape), 0.0, 1.0))
    return dist


def num_params(dist):
    return int(sum(tf.size(v).numpy() for v in dist.trainable_variables))


def set_threads(threads):
    """TensorFlow's intra- and inter-op pools: `threads` each (call before
    the first op)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def train_images_per_second(dist, x, iters, warmup=3):
    """Images/s of `dist`'s training step (``throughput.py``'s: fused Keras
    3 Adam, graph mode) on the batch `x`, timed over `iters` steps after
    the ActNorm initialisation and `warmup` untimed steps."""
    from throughput import make_ops

    batch = int(x.shape[0])
    tfp_flows.initialize(dist, x)
    train = make_ops(dist, batch, False, "fused")["train"]
    for _ in range(warmup):
        train(x).numpy()
    start = time.perf_counter()
    for _ in range(iters):
        loss = train(x)
    loss.numpy()
    return batch * iters / (time.perf_counter() - start)
