"""The ``tfp-flows`` command: train writes a complete run folder; sample,
evaluate, export and interpolate use it; bad arguments give one line.

One tiny run (Glow 2 levels x 1 step x 8 hidden channels, one epoch) is
trained in-process per module; the other commands read it.
"""

import os
import shutil
import socket

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfp_flows import cli, data, networks
from tfp_flows.bijectors import keras_layers
from tfp_flows.cli import recipes, runs

# (--ema 0: the digits recipe's weight averaging spans ~100 steps, more than
# the 37 of these runs; the --ema tests below set their own, after TINY.)
TINY = ["--epochs", "1", "--batch-size", "32", "--verbose", "0",
        "--learning-rate", "0.005", "--warmup-steps", "5",
        "--model-arg", "num_steps=1", "--model-arg", "hidden_channels=8", "--ema", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    assert cli.main(["train", "--out", out] + TINY) == 0
    return out


def _one_line_error(capsys, argv, code, match):
    """Runs the command, expects exit `code` and a one-line stderr."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


def test_train_writes_the_run_folder(run_dir):
    for name in (runs.CONFIG, runs.METRICS, runs.SAMPLES, runs.CURVE,
                 os.path.join(runs.SAVED_MODEL, "saved_model.pb"),
                 os.path.join(runs.CHECKPOINTS, "epoch-0001.weights.h5"),
                 os.path.join(runs.CHECKPOINTS, "epoch-0001.json")):
        assert os.path.exists(os.path.join(run_dir, name)), name
    metrics = runs.read_json(os.path.join(run_dir, runs.METRICS))
    # One epoch of a tiny model beats the uniform model, log2(17) = 4.09 bits.
    assert 1.0 < metrics["test_bits_per_dim"] < np.log2(17)
    assert metrics["epochs"] == 1
    assert metrics["optimizer_steps"] == data.digits.SPLIT_SIZES["train"] // 32
    # validation per epoch, test once: of the epoch chosen on validation
    assert metrics["selected_epoch"] == 1
    assert metrics["validation_bits_per_dim"] == metrics["history"][0]["validation_bits_per_dim"]
    config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
    assert config["model"] == "glow" and config["dataset"] == "digits"
    assert config["model_config"]["num_steps"] == 1
    with Image.open(os.path.join(run_dir, runs.SAMPLES)) as im:
        # 8 x 8 digits of 8 x 8 with 1-pixel gaps: 73 pixels, upscaled x4
        assert im.size == (292, 292)


def test_train_on_a_finished_run_changes_nothing(run_dir, capsys):
    def state():
        files = {}
        for root, _, names in os.walk(run_dir):
            for n in names:
                p = os.path.join(root, n)
                files[p] = (os.path.getsize(p), os.stat(p).st_mtime_ns)
        return files

    before = state()
    assert cli.main(["train", "--out", run_dir, "--verbose", "0"]) == 0
    assert f"{run_dir} is complete after epoch 1 " in capsys.readouterr().out
    assert state() == before


def test_extending_a_finished_run_says_it_replaces_the_export(run_dir, tmp_path, capsys):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    assert cli.main(["train", "--out", copy, "--epochs", "2", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "resuming glow on digits" in out and "epochs 2..2" in out
    assert (f"replacing {os.path.join(copy, runs.SAVED_MODEL)} (the model of epoch 1) "
            "with the model of epoch 2") in out
    assert runs.read_json(os.path.join(copy, runs.METRICS))["exported_epoch"] == 2
    assert runs.read_json(os.path.join(copy, runs.CONFIG))["epochs"] == 2


def test_train_with_other_settings_is_refused(run_dir, capsys):
    _one_line_error(capsys, ["train", "--out", run_dir, "--model", "nice"], 1,
                    "created with different settings: model='glow' (asked 'nice')")


def test_sample_writes_a_grid(run_dir, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    assert cli.main(["sample", run_dir, "--num", "16", "--temperature", "0.5",
                     "--out", out]) == 0
    assert "wrote 16 samples at temperature 0.5" in capsys.readouterr().out
    with Image.open(out) as im:
        pixels = np.asarray(im)
    assert pixels.shape == (259, 259)  # 4 x 4 images + gaps = 37, upscaled x7
    assert pixels.max() > 0


def test_evaluate_prints_bits_per_dim(run_dir, capsys):
    assert cli.main(["evaluate", run_dir, "--draws", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    value = float(line.split()[0])
    stored = runs.read_json(os.path.join(run_dir, runs.METRICS))["test_bits_per_dim"]
    # Other noise draws: the mean over 359 x 64 dims moves by ~1e-3 bits.
    assert abs(value - stored) < 0.01, line
    assert "bits/dim on digits 'test'" in line


def test_evaluate_on_a_dataset_of_another_shape_is_refused(run_dir, capsys):
    _one_line_error(capsys, ["evaluate", run_dir, "--dataset", "mnist"], 1,
                    "takes 8x8x1 images with 17 levels; mnist gives 28x28x1")


def test_export_never_overwrites(run_dir, tmp_path, capsys):
    target = tmp_path / "exported"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    _one_line_error(capsys, ["export", run_dir, str(target)], 1,
                    "already exists; pass --overwrite")
    assert os.listdir(target) == ["keep.txt"]
    fresh = str(tmp_path / "fresh")
    assert cli.main(["export", run_dir, fresh]) == 0
    assert os.path.exists(os.path.join(fresh, "saved_model.pb"))


def test_interpolate_strip_starts_and_ends_at_the_images(run_dir, tmp_path):
    out = str(tmp_path / "interp.png")
    assert cli.main(["interpolate", run_dir, "--pairs", "2", "--steps", "5",
                     "--seed", "3", "--out", out]) == 0
    with Image.open(out) as im:
        strip = np.asarray(im)
    scale = 6  # 2 x 5 images of 8 x 8 with 1-pixel gaps: 19 x 46, upscaled x6
    assert strip.shape == (19 * scale, 46 * scale)
    strip = strip[::scale, ::scale].astype(int)
    tile = lambda r, c: strip[1 + 9 * r:9 + 9 * r, 1 + 9 * c:9 + 9 * c]  # noqa: E731
    images = data.digits.arrays("test")[0][..., 0].astype(int)
    pick = np.random.default_rng(3).choice(len(images), 4, replace=False)
    to_png = lambda x: np.round(x * 255 / 16)  # noqa: E731
    for row in range(2):
        first, last = tile(row, 0), tile(row, 4)
        # encode/decode round trip of bin centres, floored back to the bin
        np.testing.assert_array_equal(first, to_png(images[pick[row]]))
        np.testing.assert_array_equal(last, to_png(images[pick[2 + row]]))


@pytest.mark.parametrize("argv, match", [
    ([], "a command is required"),
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer"),
    (["train", "--model", "flowpp"], "argument --model: invalid choice: 'flowpp'"),
    (["train", "--learning-rate", "nan"], "expected a number > 0"),
    (["train", "--model-arg", "depth"], "expected KEY=VALUE"),
    (["sample"], "the following arguments are required: dir"),
    (["sample", "x", "--temperature", "-1"], "expected a number >= 0"),
    (["train", "--dequantization", "learned"], "invalid choice: 'learned'"),
    (["train", "--precision", "float16"], "invalid choice: 'float16'"),
    (["train", "--importance-samples", "-2"], "expected an integer >= 0"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, match):
    _one_line_error(capsys, argv, 2, match)


@pytest.mark.parametrize("argv, match", [
    (["sample", "/nonexistent/run"], "is not a tfp-flows run folder"),
    (["train", "--dataset", "imagenet1k"], "unknown dataset 'imagenet1k'"),
    (["train", "--dataset", "two_moons"], "2-D toy data"),
    (["train", "--model-arg", "depth=3"], "glow has no argument depth"),
    (["train", "--model-arg", "num_levels=4"], "image size 8x8 is not divisible by 16"),
])
def test_bad_settings_give_one_line_and_exit_1(capsys, tmp_path, argv, match):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "r")]
    _one_line_error(capsys, argv, 1, match)
    assert not os.path.exists(tmp_path / "r")  # nothing created


def test_train_with_variational_dequantization(tmp_path, capsys):
    """--dequantization variational trains q(u|x) with the flow, resumes it
    from the checkpoint, and reports which bound each figure is."""
    out = str(tmp_path / "vd")
    argv = ["train", "--out", out, "--dequantization", "variational",
            "--importance-samples", "4"] + TINY
    assert cli.main(argv) == 0
    metrics = runs.read_json(os.path.join(out, "metrics.json"), "metrics")
    assert metrics["dequantization"] == "variational"
    assert "variational" in metrics["bits_per_dim_is"]
    assert metrics["importance_samples"] == 4
    bound, iw = metrics["test_bits_per_dim"], metrics["test_importance_weighted_bits_per_dim"]
    assert np.isfinite(bound) and np.isfinite(iw)
    # IW (k=4) <= the bound in expectation; 359 test images x 3 draws leave
    # ~0.01 of noise on the difference (measured spread < 0.005)
    assert iw <= bound + 0.01, (iw, bound)
    assert "a variational bound" in capsys.readouterr().out
    # the dequantiser is part of the checkpoint: a resumed run keeps it
    assert cli.main(["train", "--out", out, "--epochs", "2", "--verbose", "0"]) == 0
    config = runs.read_json(os.path.join(out, "config.json"), "config")
    assert config["dequantization"] == "variational"
    _, _, model, _ = cli.trainer.open_run(out)
    assert model.dequantization is not None
    # and it cannot be switched off on resume
    _one_line_error(capsys, ["train", "--out", out, "--dequantization", "uniform"],
                    1, "dequantization='variational' (asked 'uniform')")


def test_train_in_mixed_bfloat16_then_resume_in_float32(tmp_path):
    """--precision mixed_bfloat16 builds the coupling networks in bfloat16
    (variables stay float32, so the checkpoint is the same) and may change
    on resume."""
    out = str(tmp_path / "bf16")
    assert cli.main(["train", "--out", out, "--precision", "mixed_bfloat16"] + TINY) == 0
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    config = runs.read_json(os.path.join(out, runs.CONFIG))
    assert config["precision"] == "mixed_bfloat16"
    metrics = runs.read_json(os.path.join(out, runs.METRICS))
    # as for float32 above: better than the uniform model's log2(17) bits
    assert 1.0 < metrics["test_bits_per_dim"] < np.log2(17)
    _, _, model, _ = cli.trainer.open_run(out)
    nets = [layer for layer in keras_layers(model.distribution)
            if isinstance(layer, networks.GlowCNN)]
    assert nets and {n.compute_dtype for n in nets} == {"bfloat16"}
    assert {v.dtype for v in model.distribution.trainable_variables} == {tf.float32}
    assert cli.main(["train", "--out", out, "--epochs", "2", "--precision", "float32",
                     "--verbose", "0"]) == 0
    config = runs.read_json(os.path.join(out, runs.CONFIG))
    assert config["precision"] == "float32"
    _, _, model, checkpoint = cli.trainer.open_run(out)
    assert checkpoint.epoch == 2
    assert {n.compute_dtype for n in keras_layers(model.distribution)
            if isinstance(n, networks.GlowCNN)} == {"float32"}


def test_clip_norm_reaches_the_optimizer_and_may_change_on_resume(tmp_path, capsys):
    """--clip-norm N builds Adam with global_clipnorm=N, is recorded per
    epoch in the history, and may be changed (or turned off with 0) when
    resuming, e.g. to calm a run whose loss spiked."""
    out = str(tmp_path / "clip")
    assert cli.main(["train", "--out", out, "--clip-norm", "2.5"] + TINY) == 0
    assert runs.read_json(os.path.join(out, runs.CONFIG))["clip_norm"] == 2.5
    _, _, model, checkpoint = cli.trainer.open_run(out)
    assert model.optimizer.global_clipnorm == 2.5
    assert [h["clip_norm"] for h in checkpoint.history] == [2.5]
    assert cli.main(["train", "--out", out, "--epochs", "2", "--clip-norm", "0",
                     "--verbose", "0"]) == 0
    _, _, model, checkpoint = cli.trainer.open_run(out)
    assert model.optimizer.global_clipnorm is None
    assert [h["clip_norm"] for h in checkpoint.history] == [2.5, None]
    _one_line_error(capsys, ["train", "--clip-norm", "-1"], 2, "expected a number >= 0")


def test_ema_run_validates_scores_and_exports_the_averaged_weights(tmp_path, capsys):
    """--ema DECAY keeps Keras' moving average of the weights; the run's
    model (what open_run, sample, evaluate and export see) is the average,
    while the checkpoint keeps the raw weights that training resumes from."""
    out = str(tmp_path / "ema")
    assert cli.main(["train", "--out", out] + TINY + ["--ema", "0.9"]) == 0
    config = runs.read_json(os.path.join(out, runs.CONFIG))
    assert config["ema"] == 0.9
    folder, config, model, checkpoint = cli.trainer.open_run(out)
    raw = recipes.build_model(config)
    folder.restore(raw, checkpoint)
    averages = raw.optimizer._model_variables_moving_average
    assert len(averages) == len(model.trainable_variables)
    for average, weight in zip(averages, model.trainable_variables):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())
    # 37 steps at 5e-3 move the raw weights away from their average
    assert max(float(np.abs(r.numpy() - w.numpy()).max()) for r, w in
               zip(raw.trainable_variables, model.trainable_variables)) > 1e-3
    metrics = runs.read_json(os.path.join(out, runs.METRICS))
    assert 1.0 < metrics["test_bits_per_dim"] < np.log2(17)
    _one_line_error(capsys, ["train", "--out", out, "--ema", "0.99"], 1,
                    "ema=0.9 (asked 0.99)")
    _one_line_error(capsys, ["train", "--ema", "1"], 2, "expected a decay in [0, 1)")


def test_ema_validates_with_the_average_and_trains_the_same(run_dir, tmp_path):
    """With a decay of 1 - 1e-6 the average stays at the first step's
    weights: training (the raw weights) is exactly the plain run's, while
    validation scores the barely trained average (measured 4.61 against the
    plain run's 3.81 bits/dim)."""
    out = str(tmp_path / "ema_frozen")
    assert cli.main(["train", "--out", out] + TINY + ["--ema", "0.999999"]) == 0
    plain = runs.read_json(os.path.join(run_dir, runs.METRICS))["history"][0]
    frozen = runs.read_json(os.path.join(out, runs.METRICS))["history"][0]
    # same seed, same data order, same raw updates: the same training loss
    # up to float summation order (rtol 1e-5)
    np.testing.assert_allclose(frozen["train_bits_per_dim"],
                               plain["train_bits_per_dim"], rtol=1e-5)
    assert frozen["validation_bits_per_dim"] > plain["validation_bits_per_dim"] + 0.3


def test_ema_is_on_by_default_on_digits_only():
    """The digits recipe averages the weights (decay 0.99, chosen on
    validation); other datasets do not unless asked; 0 turns it off."""
    tiny = dict(model_args=dict(num_steps=1, hidden_channels=8))
    assert recipes.new_config(tiny)["ema"] == 0.99
    assert recipes.build_model(recipes.new_config(tiny)).optimizer.use_ema
    off = recipes.new_config(dict(tiny, ema=0.0))
    assert off["ema"] == 0.0 and not recipes.build_model(off).optimizer.use_ema
    assert recipes.new_config(dict(tiny, dataset="mnist"))["ema"] is None


def test_ema_starts_from_the_data_initialised_actnorm():
    """Keras copies the weights into the average at the first step, after
    ActNorm's data-dependent initialisation (not its placeholder values)."""
    config = recipes.new_config(dict(model_args=dict(num_steps=1, hidden_channels=8),
                                     ema=0.999))
    model = recipes.build_model(config)
    model.fit(recipes.datasets(config).take(1), epochs=1, verbose=0, shuffle=False)
    actnorm = [(w, a) for w, a in zip(model.trainable_variables,
                                      model.optimizer._model_variables_moving_average)
               if "actnorm" in w.path]
    assert actnorm
    for weight, average in actnorm:
        np.testing.assert_array_equal(average.numpy(), weight.numpy())
        assert np.abs(weight.numpy()).max() > 0.05  # initialised from data


def test_default_run_folder_is_model_and_dataset(tmp_path):
    assert recipes.default_run_folder() == os.path.join("runs", "glow-digits")
    assert recipes.default_run_folder("real_nvp", "fashion_mnist") == os.path.join(
        "runs", "real_nvp-fashion-mnist")
    images = tmp_path / "faces"
    images.mkdir()
    assert recipes.default_run_folder("nice", str(images) + os.sep) == os.path.join(
        "runs", "nice-faces")
    assert recipes.default_run_folder("glow", str(tmp_path / "x.npz")) == os.path.join(
        "runs", "glow-x")


def test_offline_mnist_without_files_fails_fast_with_one_line(tmp_path, monkeypatch, capsys):
    """`tfp-flows train --dataset mnist` offline, without IDX files: one line
    naming --data-dir after one short network probe; no run folder is left
    behind (the default one would be runs/glow-mnist)."""
    monkeypatch.chdir(tmp_path)
    timeouts = []

    def refuse(address, timeout=None, *args, **kwargs):
        timeouts.append(timeout)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    _one_line_error(capsys, ["train", "--dataset", "mnist", "--verbose", "0",
                             "--model-arg", "num_steps=1", "--model-arg", "hidden_channels=8"],
                    1, "--data-dir")
    assert len(timeouts) == 1 and timeouts[0] <= 5
    assert not os.path.exists(os.path.join("runs", "glow-mnist"))
