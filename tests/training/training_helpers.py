"""Tiny models and data shared by the training tests and their subprocesses."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

import tfp_flows

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
NUM_BINS = 17
SHAPE = (8, 8, 1)


def tiny_glow(seed=0, num_classes=None):
    """Glow with 2 levels x 1 step, 8 hidden channels: ~2k parameters."""
    keras.utils.set_random_seed(seed)
    return tfp_flows.models.glow(list(SHAPE), num_levels=2, num_steps=1,
                                 hidden_channels=8, num_bins=NUM_BINS,
                                 num_classes=num_classes, seed=seed)


def pixels(n, seed=0):
    """Integer-valued images in [0, NUM_BINS) with some structure (a ramp)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, NUM_BINS - 1, SHAPE[0])[None, :, None, None]
    noise = rng.integers(-3, 4, size=(n,) + SHAPE)
    return np.clip(np.round(ramp + noise), 0, NUM_BINS - 1).astype(np.float32)


def variables_dict(model):
    """{path: numpy value} of the model's and the optimizer's variables."""
    out = {f"model/{v.path}": np.asarray(v.numpy()) for v in model.variables}
    if getattr(model, "optimizer", None) is not None:
        out.update({f"opt/{v.path}": np.asarray(v.numpy())
                    for v in model.optimizer.variables})
    return out


def save_npz(path, values):
    np.savez(path, **{k.replace("/", "|"): v for k, v in values.items()})


def load_npz(path):
    with np.load(path) as f:
        return {k.replace("|", "/"): f[k] for k in f.files}


def script_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["KERAS_BACKEND"] = "tensorflow"
    env.pop("TF_CONFIG", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(name, *args, timeout=240, **env):
    """Runs tests/training/scripts/<name> to completion; returns stdout."""
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *map(str, args)],
                          env=script_env(**env), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def read_json(path):
    with open(path) as f:
        return json.load(f)
