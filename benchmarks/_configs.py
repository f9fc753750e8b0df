"""The Glow configurations every speed benchmark shares, and their input
batch (no TensorFlow, so a peer's process can read them)."""

__all__ = ["CONFIGS", "pixels"]

CONFIGS = {
    "small": dict(shape=(8, 8, 1), levels=2, steps=8, hidden=128, batch=64),
    "cifar": dict(shape=(32, 32, 3), levels=3, steps=8, hidden=128, batch=32),
    "paper": dict(shape=(32, 32, 3), levels=3, steps=32, hidden=512, batch=64),
}


def pixels(cfg):
    """The benchmarks' input batch for configuration `cfg`: dequantised 8-bit
    pixels ``k + u`` in ``[0, 256)``, ``[batch, H, W, C]`` float32, the same
    numbers for every library (NumPy, seed 0)."""
    import numpy as np

    shape = (cfg["batch"],) + tuple(cfg["shape"])
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, shape) + rng.random(shape)).astype(np.float32)
