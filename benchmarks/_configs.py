"""The Glow configurations every speed benchmark shares (no imports, so a
peer's process can read them without TensorFlow)."""

__all__ = ["CONFIGS"]

CONFIGS = {
    "small": dict(shape=(8, 8, 1), levels=2, steps=8, hidden=128, batch=64),
    "cifar": dict(shape=(32, 32, 3), levels=3, steps=8, hidden=128, batch=32),
    "paper": dict(shape=(32, 32, 3), levels=3, steps=32, hidden=512, batch=64),
}
