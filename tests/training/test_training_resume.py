"""Kill-and-resume: a real training process is SIGKILLed after a checkpoint
and restarted; it continues from the last saved point."""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.training import training_helpers as th
from tfp_flows.training import FlowModel

# Each wait is bounded: imports take ~10 s on a loaded 2-core machine.
START_TIMEOUT_S = 180


def _start(workdir, epochs, pause):
    return subprocess.Popen(
        [sys.executable, os.path.join(th.SCRIPTS, "resume_worker.py"),
         workdir, str(epochs), str(pause)],
        env=th.script_env(), cwd=th.REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before "
                                 f"{text!r}:\n{proc.stderr.read()[-6000:]}")
    proc.kill()
    raise AssertionError(f"no {text!r} within {timeout} s")


def test_sigkill_mid_run_then_resume_continues_from_last_checkpoint(tmp_path):
    workdir = str(tmp_path)
    # Run 1: 4 epochs planned, killed after epoch index 1 was checkpointed.
    first = _start(workdir, epochs=4, pause=1)
    try:
        _wait_for_line(first, "CHECKPOINTED", START_TIMEOUT_S)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
        first.stdout.close()
        first.stderr.close()
    assert os.path.exists(os.path.join(workdir, "backup"))
    saved = th.load_npz(os.path.join(workdir, "at_pause.npz"))

    # Run 2: the same command, to completion.
    out = subprocess.run(
        [sys.executable, os.path.join(th.SCRIPTS, "resume_worker.py"),
         workdir, "4", "-1"], env=th.script_env(), cwd=th.REPO,
        capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-6000:]
    (final_path,) = glob.glob(os.path.join(workdir, "final_*.npz"))
    pid = final_path.rsplit("_", 1)[1].split(".")[0]

    # It resumed at epoch 2 (0-based) and ran only epochs 2 and 3.
    assert th.read_json(os.path.join(workdir, f"epochs_{pid}.json")) == [2, 3]
    # It started from exactly the saved state: model variables (including
    # ActNorm's `initialized` flags, True) and the optimizer's slots and
    # iteration count. ActNorm was not re-initialised from data.
    start = th.load_npz(os.path.join(workdir, f"start_{pid}.npz"))
    assert set(start) == set(saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(start[key], value, err_msg=key)
    flags = [k for k in saved if k.endswith("initialized")]
    assert len(flags) == 2 and all(bool(saved[k]) for k in flags)
    iterations = [k for k in saved if k.endswith("iteration")]
    assert iterations and int(saved[iterations[0]]) == 4  # 2 epochs x 2 steps
    # ... and then kept training.
    final = th.load_npz(final_path)
    assert int(final[iterations[0]]) == 8
    moved = [k for k in saved if k.startswith("model/") and "initialized" not in k
             and not np.array_equal(final[k], saved[k])]
    assert moved

    # ModelCheckpoint's file of epoch 2 holds the state at the kill, and a
    # fresh model restores it.
    ckpts = sorted(os.listdir(os.path.join(workdir, "ckpt")))
    assert ckpts == [f"epoch{i}.weights.h5" for i in (1, 2, 3, 4)]
    fresh = FlowModel(th.tiny_glow(seed=5))
    fresh.load_weights(os.path.join(workdir, "ckpt", "epoch2.weights.h5"))
    for v in fresh.variables:
        np.testing.assert_array_equal(v.numpy(), saved[f"model/{v.path}"],
                                      err_msg=v.path)
