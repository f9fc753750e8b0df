"""Faults of a run folder (issue 8): SIGKILL mid-epoch then resume, truncated
and corrupted checkpoints, a NaN during training, settings mismatches.

Models are tiny (Glow 2 levels x 1 step x 8 hidden channels, ~1.9k
parameters) so that a real subprocess trains a few epochs in seconds.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import data
from tfp_flows.cli import recipes, runs, trainer
from tfp_flows.training import FlowModel
from tfp_flows.training.guards import NaNGuard, TrainingDivergedError, all_finite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ARGS = ["--model-arg", "num_steps=1", "--model-arg", "hidden_channels=8"]
# ema 0: the models compared with their checkpoints hold raw weights (with
# --ema, Keras' fit ends by putting the averages into the model)
TINY = {"model_args": {"num_steps": 1, "hidden_channels": 8}, "batch_size": 32, "ema": 0.0}
# Hard limits for the subprocess test: importing TensorFlow alone takes
# ~15 s on a loaded 2-core machine.
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 300


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _new_run(path, epochs=2, steps_per_epoch=3, **settings):
    """A run folder with `epochs` real checkpoints, trained in-process."""
    folder = runs.RunFolder(path, log=lambda msg: None)
    config = recipes.new_config(dict(TINY, epochs=epochs, **settings))
    folder.write_config(config)
    model = recipes.build_model(config)
    train = recipes.datasets(config).take(steps_per_epoch)
    writer = runs.CheckpointWriter(folder)
    model.fit(train, epochs=epochs, verbose=0, shuffle=False, callbacks=[writer])
    return folder, config, model


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    return _new_run(str(tmp_path_factory.mktemp("run") / "r"))


def _copy_run(src, dst):
    shutil.copytree(src.path, dst)
    messages = []
    return runs.RunFolder(dst, log=messages.append), messages


def test_checkpoint_restores_weights_flags_and_optimizer(two_epoch_run):
    folder, config, model = two_epoch_run
    checkpoint = folder.latest_checkpoint()
    assert checkpoint.epoch == 2
    assert [h["epoch"] for h in checkpoint.history] == [1, 2]
    fresh = recipes.build_model(config)
    folder.restore(fresh, checkpoint)
    for a, b in zip(model.variables + model.optimizer.variables,
                    fresh.variables + fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert int(fresh.optimizer.iterations.numpy()) == 6  # 2 epochs x 3 steps


def test_truncated_checkpoint_falls_back_to_previous_with_message(two_epoch_run, tmp_path):
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    path = os.path.join(folder.checkpoint_dir, "epoch-0002.weights.h5")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    checkpoint = folder.latest_checkpoint()
    assert checkpoint.epoch == 1
    assert any(path in m and "truncated" in m for m in messages), messages


def test_corrupted_bytes_detected_by_checksum(two_epoch_run, tmp_path):
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    path = os.path.join(folder.checkpoint_dir, "epoch-0002.weights.h5")
    with open(path, "r+b") as f:  # same size, a few bytes flipped
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\x00\xff\x00\xff")
    assert folder.latest_checkpoint(quarantine=True).epoch == 1
    assert any(path in m and "SHA-256" in m for m in messages), messages
    # quarantined: the resumed run can write epoch 2 again
    assert os.path.exists(path + ".corrupt") and not os.path.exists(path)


def test_no_intact_checkpoint_stops_naming_the_files(two_epoch_run, tmp_path):
    folder, _ = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    for epoch in (1, 2):
        with open(os.path.join(folder.checkpoint_dir,
                               f"epoch-{epoch:04d}.weights.h5"), "r+b") as f:
            f.truncate(100)
    os.remove(os.path.join(folder.checkpoint_dir, "epoch-0001.weights.h5"))
    with pytest.raises(runs.CheckpointError) as e:
        folder.latest_checkpoint()
    assert "epoch-0002.weights.h5 is truncated" in str(e.value)
    assert "epoch-0001.weights.h5 is missing" in str(e.value)
    # the CLI refuses too, without touching anything
    with pytest.raises(runs.CheckpointError):
        trainer.train(folder.path, {}, log=lambda m: None)


def test_unreadable_manifest_and_orphan_weights_are_skipped(two_epoch_run, tmp_path):
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    manifest = os.path.join(folder.checkpoint_dir, "epoch-0002.json")
    with open(manifest, "w") as f:
        f.write('{"epoch": 2, "sha2')  # cut short
    # a kill between writing weights and manifest leaves weights alone
    with open(os.path.join(folder.checkpoint_dir, "epoch-0003.weights.h5"), "wb") as f:
        f.write(b"partial")
    assert folder.latest_checkpoint().epoch == 1
    assert any("epoch-0002.json is unreadable" in m for m in messages), messages


def _set_validation(folder, epoch, value):
    """Rewrites epoch `epoch`'s manifest with validation bits/dim `value`."""
    path = os.path.join(folder.checkpoint_dir, f"epoch-{epoch:04d}.json")
    runs.write_json(path, dict(runs.read_json(path), validation_bits_per_dim=value))


@pytest.mark.parametrize("values, best", [((float("nan"), 3.0), 2), ((2.0, float("nan")), 1),
                                           ((float("inf"), 3.0), 2)])
def test_a_non_finite_validation_figure_never_makes_the_best_epoch(two_epoch_run, tmp_path,
                                                                   values, best):
    """A diverged evaluation (NaN or inf bits/dim) is recorded but cannot be
    chosen; NaN compares false with everything, so a plain min would have
    taken it when it came first."""
    folder, _ = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    for epoch, value in zip((1, 2), values):
        _set_validation(folder, epoch, value)
    assert folder.best_checkpoint().epoch == best


def test_a_diverged_validation_is_saved_and_reported(two_epoch_run, tmp_path):
    """The epoch is checkpointed (its weights are finite) with its figure,
    and the run's log says why it will not be chosen."""
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    _set_validation(folder, 2, 2.5)
    writer = runs.CheckpointWriter(folder, history=folder.latest_checkpoint().history)
    writer.set_model(two_epoch_run[2])
    writer.set_params({"steps": 3})
    writer.on_epoch_begin(2)
    writer.on_epoch_end(2, {"bits_per_dim": 3.0, "val_bits_per_dim": float("inf")})
    assert folder.latest_checkpoint().epoch == 3
    assert folder.latest_checkpoint().history[-1]["validation_bits_per_dim"] == float("inf")
    assert folder.best_checkpoint().epoch == 2
    assert any("epoch 3's validation bits/dim is inf" in m for m in messages), messages


def test_variational_runs_record_their_dequantizer():
    """New runs record q's settings (the bounded exp_tanh scale); a run made
    before they were recorded resumes with the sigmoid scale it trained."""
    config = recipes.new_config(dict(TINY, dequantization="variational"))
    assert config["dequantizer"]["scale_fn"] == "exp_tanh"
    assert recipes.build_model(config).dequantization.scale_fn == "exp_tanh"
    older = {k: v for k, v in config.items() if k != "dequantizer"}
    assert recipes.build_model(older).dequantization.scale_fn == "sigmoid"
    assert "dequantizer" not in recipes.new_config(TINY)


def test_partial_checkpoint_continues_the_latest_epoch_only(two_epoch_run, tmp_path):
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    model = two_epoch_run[2]
    latest = folder.latest_checkpoint()
    saved = folder.save_partial(model, latest.epoch, 2, 3, 3.5, 1.25)
    found = folder.partial_checkpoint(latest)
    assert found is not None and found.path == saved.path
    assert (found.manifest["step"], found.manifest["steps_in_epoch"]) == (2, 3)
    # a newer save replaces it (a new weights file, the manifest renamed over)
    model.optimizer.iterations.assign_add(1)
    newer = folder.save_partial(model, latest.epoch, 2, 3, 3.4, 1.5)
    assert not os.path.exists(saved.path) and os.path.exists(newer.path)
    model.optimizer.iterations.assign_add(-1)
    # inside an older epoch (a kill between an epoch's checkpoint and its
    # clean-up): stale, removed
    older = folder.latest_checkpoint()
    assert folder.partial_checkpoint(runs.Checkpoint(older.epoch + 1, older.path,
                                                     older.manifest)) is None
    assert not any(n.startswith(runs.PARTIAL) for n in os.listdir(folder.checkpoint_dir))
    # an epoch's checkpoint supersedes the partial one of that epoch
    folder.save_partial(model, latest.epoch, 2, 3, 3.5, 1.25)
    folder.save_checkpoint(model, latest.epoch + 1, latest.history)
    assert not any(n.startswith(runs.PARTIAL) for n in os.listdir(folder.checkpoint_dir))
    assert messages == []


def test_after_a_partial_epoch_the_next_epochs_train_the_raw_weights(tmp_path, monkeypatch):
    """With weight averaging, Keras' fit ends by putting the averages into
    the model; resuming inside an epoch takes two fits, and the second must
    start from the raw weights (those of the epoch's checkpoint)."""
    path = str(tmp_path / "r")
    folder, config, model = _new_run(path, epochs=1, ema=0.9)
    train = recipes.datasets(config).take(3)
    model.fit(train.take(1), epochs=1, verbose=0, shuffle=False)  # a step into epoch 2
    folder.save_partial(model, 1, 1, 3, 3.0, 0.1)
    starts = []
    original = FlowModel.fit

    def spy(self, *args, **kwargs):
        starts.append([v.numpy().copy() for v in self.trainable_variables])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FlowModel, "fit", spy)
    trainer.train(path, {"epochs": 3}, train_data=train, log=lambda m: None)
    assert len(starts) == 2  # the rest of epoch 2, then epoch 3
    raw = recipes.build_model(config)  # epoch 2's checkpoint: raw weights
    folder.restore(raw, runs.Checkpoint(2, os.path.join(folder.checkpoint_dir,
                                                        "epoch-0002.weights.h5"), {}))
    for start, weight in zip(starts[1], raw.trainable_variables):
        np.testing.assert_array_equal(start, weight.numpy())


def test_damaged_partial_checkpoint_is_reported_and_skipped(two_epoch_run, tmp_path):
    folder, messages = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    latest = folder.latest_checkpoint()
    saved = folder.save_partial(two_epoch_run[2], latest.epoch, 1, 3, 3.5, 0.5)
    with open(saved.path, "r+b") as f:
        f.truncate(100)
    assert folder.partial_checkpoint(latest) is None
    assert any(saved.path in m and "truncated" in m and "end of epoch 2" in m
               for m in messages), messages
    assert os.path.exists(saved.path + ".corrupt")


def test_nan_stops_training_and_keeps_last_good_checkpoint(two_epoch_run, tmp_path):
    folder, _ = _copy_run(two_epoch_run[0], str(tmp_path / "r"))
    before = {n: _sha(os.path.join(folder.checkpoint_dir, n))
              for n in os.listdir(folder.checkpoint_dir)}
    images = data.digits.arrays("train")[0][:96].astype(np.float32)
    images[40, 3, 3, 0] = np.nan  # the second batch of 32 is poisoned
    poisoned = tf.data.Dataset.from_tensor_slices(images).batch(32)
    with pytest.raises(TrainingDivergedError) as e:
        trainer.train(folder.path, {"epochs": 4}, train_data=poisoned,
                      log=lambda m: None)
    message = str(e.value)
    assert "loss became nan at epoch 3, batch 2" in message
    assert "epoch-0002.weights.h5 (epoch 2), is intact" in message
    after = {n: _sha(os.path.join(folder.checkpoint_dir, n))
             for n in os.listdir(folder.checkpoint_dir)}
    assert after == before  # nothing written, nothing touched
    _, _, model, checkpoint = trainer.open_run(folder.path)
    assert checkpoint.epoch == 2 and all_finite(model)


def test_guard_catches_non_finite_weights_with_finite_loss(two_epoch_run):
    _, config, _ = two_epoch_run
    model = recipes.build_model(config)
    guard = NaNGuard()
    guard.set_model(model)
    guard.on_train_begin()
    model.variables[0].assign(np.full(model.variables[0].shape, np.inf))
    guard.on_epoch_end(0, {"loss": 1.0})
    assert guard.failure.what == "weights" and model.stop_training


def test_resume_with_other_settings_is_refused(two_epoch_run):
    folder = two_epoch_run[0]
    with pytest.raises(runs.RunError, match=r"model='glow' \(asked 'nice'\)"):
        trainer.train(folder.path, {"model": "nice"})
    with pytest.raises(runs.RunError, match=r"model_args.hidden_channels=8 \(asked 16\)"):
        trainer.train(folder.path, {"model_args": {"hidden_channels": 16}})
    with pytest.raises(runs.RunError, match="already trained 2 epochs"):
        trainer.train(folder.path, {"epochs": 1}, log=lambda m: None)


def test_existing_folder_that_is_not_a_run_is_never_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunError, match="not a tfp-flows run folder"):
        trainer.train(str(tmp_path), TINY)
    assert os.listdir(tmp_path) == ["notes.txt"]


# Batch 4: an epoch is 299 steps, about 1 s on a quiet 2-core CPU (3 ms a
# step for this tiny model), so a kill 0.1 s after epoch 1's checkpoint lands
# inside epoch 2 (with batch 8 and a 0.5 s wait, epoch 2 once finished first).
BATCH = 4


def _cli(out, epochs):
    # The installed console script (setup.cfg: tfp-flows = tfp_flows.cli:main).
    script = os.path.join(os.path.dirname(sys.executable), "tfp-flows")
    return [script, "train", "--out", out,
            "--epochs", str(epochs), "--batch-size", str(BATCH), "--verbose", "2"] + TINY_ARGS


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill_when(argv, ready, what, delay=0.0):
    """Starts the command, SIGKILLs it `delay` seconds after `ready()` holds
    (fails with `what` if it never does within START_TIMEOUT_S)."""
    proc = subprocess.Popen(argv, cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, what
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_sigkill_after_a_partial_checkpoint_resumes_at_its_step(tmp_path):
    """With --checkpoint-minutes, a run killed inside epoch 2 resumes at the
    step of its last partial checkpoint: the finished run has made exactly
    2 epochs of optimizer steps (none lost, none repeated)."""
    out = str(tmp_path / "run")
    argv = _cli(out, 2) + ["--checkpoint-minutes", "0.002"]  # every 0.12 s
    partial = os.path.join(out, "checkpoints", runs.PARTIAL + ".json")
    first_manifest = os.path.join(out, "checkpoints", "epoch-0001.json")
    _kill_when(argv, lambda: os.path.exists(first_manifest) and os.path.exists(partial)
               and runs.read_json(partial)["epoch"] == 1, "no partial checkpoint in epoch 2")
    assert not os.path.exists(os.path.join(out, "checkpoints", "epoch-0002.json")), \
        "the kill came after epoch 2 finished"
    step = runs.read_json(partial)["step"]
    steps = data.digits.SPLIT_SIZES["train"] // BATCH
    assert 0 < step < steps

    done = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"epochs 2..2, epoch 2 from step {step} of {steps}" in done.stdout
    metrics = runs.read_json(os.path.join(out, runs.METRICS))
    assert metrics["optimizer_steps"] == 2 * steps
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][1]["resumed_at_step"] == step
    assert np.isfinite(metrics["history"][1]["train_bits_per_dim"])
    assert not any(n.startswith(runs.PARTIAL)
                   for n in os.listdir(os.path.join(out, "checkpoints")))


def test_sigkill_mid_epoch_then_same_command_resumes_and_finishes(tmp_path):
    out = str(tmp_path / "run")
    first_manifest = os.path.join(out, "checkpoints", "epoch-0001.json")
    # Epoch 2 takes ~1 s or more (299 steps of batch 4): kill inside it.
    _kill_when(_cli(out, 2), lambda: os.path.exists(first_manifest),
               "no checkpoint within the timeout", delay=0.1)
    assert not os.path.exists(os.path.join(out, "checkpoints", "epoch-0002.json")), \
        "the kill came after epoch 2 finished; the test did not kill mid-epoch"
    assert not os.path.exists(os.path.join(out, runs.METRICS))

    done = subprocess.run(_cli(out, 2), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming glow on digits" in done.stdout and "epochs 2..2" in done.stdout
    for name in (runs.CONFIG, runs.METRICS, runs.SAMPLES, runs.CURVE,
                 os.path.join(runs.SAVED_MODEL, "saved_model.pb")):
        assert os.path.exists(os.path.join(out, name)), name
    metrics = runs.read_json(os.path.join(out, runs.METRICS))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["optimizer_steps"] == 2 * (data.digits.SPLIT_SIZES["train"] // BATCH)
    # The run's model (the epoch chosen on validation) loads and gives
    # finite densities.
    _, config, model, checkpoint = trainer.open_run(out)
    assert checkpoint.epoch == metrics["selected_epoch"]
    x = data.digits.arrays("test")[0][:16].astype(np.float32) + 0.5
    assert np.all(np.isfinite(model.distribution.log_prob(x).numpy()))
