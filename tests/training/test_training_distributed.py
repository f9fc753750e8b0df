"""tf.distribute: MirroredStrategy on 2 logical CPUs, and
MultiWorkerMirroredStrategy with 2 worker processes on loopback.

Both need a fresh process: logical devices and the multi-worker cluster must
be configured before TensorFlow initialises its devices.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.training import training_helpers as th
from tfp_flows.training import FlowModel

# Hard bounds: imports + tracing take ~10-30 s per process on a loaded
# 2-core machine; a hung collective must fail the test, not the suite.
TIMEOUT_S = 240


def test_mirrored_strategy_two_logical_cpus_agrees_with_one_device(tmp_path):
    th.run_script("mirrored_worker.py", tmp_path, timeout=TIMEOUT_S)
    res = th.read_json(tmp_path / "result.json")
    assert res["num_replicas"] == 2
    assert res["variable_types"] == ["MirroredVariable"]
    # ActNorm: initialised once from the global first batch, same on both
    # replicas, bit for bit.
    assert res["num_actnorm_vars"] == 4
    assert res["replicas_agree"] and res["init_is_global_batch"]
    # Training under the strategy matches one device: same global batches,
    # gradients summed over two half-batches instead of one full batch
    # (float32 reassociation only).
    np.testing.assert_allclose(res["history_mirrored"]["loss"],
                               res["history_one"]["loss"], rtol=1e-5)
    one = th.load_npz(tmp_path / "one.npz")
    mirrored = th.load_npz(tmp_path / "mirrored.npz")
    assert set(one) == set(mirrored)
    for key in one:
        np.testing.assert_allclose(mirrored[key], one[key], rtol=1e-4,
                                   atol=1e-6, err_msg=key)
    assert res["predict_shape"] == [8] and res["predict_finite"]
    assert np.isfinite(res["evaluate_bits_per_dim"])
    assert np.all(np.isfinite(res["history_dequantized"]["loss"]))
    assert "inside strategy.scope()" in res["outside_scope_error"]


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_multi_worker_mirrored_two_processes_and_chief_checkpoint(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(2):
            env = th.script_env(TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            procs.append(subprocess.Popen(
                [sys.executable, os.path.join(th.SCRIPTS, "multiworker_worker.py"),
                 str(tmp_path)], env=env, cwd=th.REPO, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True))
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-6000:]

    info = [th.read_json(tmp_path / f"worker{i}.json") for i in range(2)]
    assert [i["num_replicas"] for i in info] == [2, 2]
    # Both workers trained the same model: identical variables, although
    # their input pipelines shuffled differently (different first batches).
    w0 = th.load_npz(tmp_path / "worker0.npz")
    w1 = th.load_npz(tmp_path / "worker1.npz")
    assert set(w0) == set(w1)
    for key in w0:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    assert info[0]["history"] == info[1]["history"]
    assert np.all(np.isfinite(info[0]["history"]["loss"]))

    # The chief's checkpoint restores on one device.
    model = FlowModel(th.tiny_glow(seed=3))
    model.load_weights(str(tmp_path / "chief.weights.h5"))
    for v in model.variables:
        np.testing.assert_array_equal(v.numpy(), w0[v.path], err_msg=v.path)
    fixed = th.pixels(4, seed=9) + np.float32(0.5)
    np.testing.assert_allclose(model(fixed).numpy(),
                               info[0]["bits_per_dim_fixed"], rtol=1e-6)
