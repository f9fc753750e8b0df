"""Every script in examples/ runs in its --smoke mode (tiny models, a few
steps); the tfds one on `tfds.testing.mock_data`. They run in-process (one
TensorFlow import for all) by calling each script's ``main(argv)``."""

import os

import numpy as np
import tensorflow_datasets as tfds

from tests.script_loader import load_script

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples")


def _load(name):
    return load_script("examples", name)


def test_every_example_is_tested():
    scripts = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == sorted(["glow_digits_keras", "nice_toy2d", "real_nvp_cifar10",
                              "vi_surrogate_posterior"])


def test_glow_digits_keras(tmp_path):
    out = _load("glow_digits_keras").main(["--smoke", "--out", str(tmp_path)])
    # 72 steps of a small model already beat the uniform model, log2(17) =
    # 4.09 bits/dim (observed 3.73); a model that does not learn stays above.
    assert out["test_bits_per_dim"] < np.log2(17) - 0.1
    for name in ("samples.png", "samples_epoch0001.png",
                 os.path.join("saved_model", "saved_model.pb")):
        assert (tmp_path / name).exists(), name


def test_nice_toy2d(tmp_path):
    out = _load("nice_toy2d").main(["--smoke", "--out", str(tmp_path / "nice.png")])
    assert np.isfinite(out["test_nll"])
    assert (tmp_path / "nice.png").stat().st_size > 0


def test_real_nvp_cifar10_on_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        out = _load("real_nvp_cifar10").main(
            ["--smoke", "--batch-size", "4", "--out", str(tmp_path)])
    assert np.isfinite(out["test_bits_per_dim"])
    assert (tmp_path / "samples.png").exists()
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()


def test_vi_surrogate_posterior(tmp_path):
    out = _load("vi_surrogate_posterior").main(["--smoke", "--out", str(tmp_path / "vi.png")])
    # KL(q || p) >= 0 up to Monte Carlo error (~0.02 with 4096 samples)
    assert out["flow"] > -0.05 and out["gaussian"] > -0.05
    assert (tmp_path / "vi.png").stat().st_size > 0
