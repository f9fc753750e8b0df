"""SavedModel export: signatures, reload without tfp_flows, saved_model_cli.

One tiny class-conditional Glow (2 levels, so per-level latents are exported)
is exported once per module; a tiny vector flow covers the model without
pixel bins, the overwrite rules and the FlowModel duck typing.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows
from tfp_flows import flow_ops
from tfp_flows.export import (
    ExportPathExistsError,
    ServingModule,
    bits_per_dim_with_seed,
    sample_with_seed,
    stateless_seed,
)

NUM_BINS = 17
LABELS = np.array([0, 2, 1, 2, 0], np.int32)
SAMPLE_LABELS = np.array([1, 0, 2], np.int32)
SEED = 1234567890123  # > 2**31: exercises both words of the stateless seed
TEMPERATURE = 0.7
# The exported graph and the in-memory `tf.function` run the same float32 ops;
# eager execution may fuse or order reductions differently, so eager/graph
# comparisons allow float32 round-off on log-densities of magnitude ~100.
EAGER_RTOL = 1e-5


def _subprocess_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _pixels(rng, n):
    return rng.integers(0, NUM_BINS, size=(n, 8, 8, 1)).astype(np.int32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained-looking conditional Glow, exported, with in-memory references."""
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    dist = tfp_flows.models.glow([8, 8, 1], num_levels=2, num_steps=1,
                                 hidden_channels=8, num_bins=NUM_BINS,
                                 num_classes=3, seed=3)
    images = _pixels(rng, 5)
    x = images.astype(np.float32) + rng.uniform(size=images.shape).astype(np.float32)
    kw = {"top_prior": {"labels": LABELS}}
    tfp_flows.initialize(dist, x, kw)
    # Move every parameter off its initial value, so that a wrongly restored
    # (re-initialised) variable would change the outputs.
    for v in dist.trainable_variables:
        v.assign_add(0.05 * tf.random.normal(v.shape, seed=1))
    root = tmp_path_factory.mktemp("export")
    path = str(root / "glow")
    module = tfp_flows.export(dist, path)
    refs = {
        "x": x, "images": images, "labels": LABELS,
        "sample_labels": SAMPLE_LABELS,
        "log_prob": module.log_prob(x, LABELS)["log_prob"].numpy(),
        "log_prob_1": module.log_prob(x[:1], LABELS[:1])["log_prob"].numpy(),
        "bits_per_dim": module.bits_per_dim(images, SEED, LABELS)["bits_per_dim"].numpy(),
        "samples": module.sample(3, TEMPERATURE, SEED, SAMPLE_LABELS)["samples"].numpy(),
    }
    enc = module.encode(x, LABELS)
    refs.update({f"encode_{k}": v.numpy() for k, v in enc.items()})
    refs["decode"] = module.decode(enc["latent"], LABELS)["x"].numpy()
    np.savez(root / "refs.npz", **refs)
    return dict(dist=dist, module=module, path=path, root=root, refs=refs, kw=kw)


def test_in_memory_signatures_match_the_flow(exported):
    dist, refs, kw = exported["dist"], exported["refs"], exported["kw"]
    x = refs["x"]
    eager_lp = dist.log_prob(x, bijector_kwargs=kw).numpy()
    np.testing.assert_allclose(refs["log_prob"], eager_lp, rtol=EAGER_RTOL)
    # bits/dim = tfp_flows.bits_per_dim on the same stateless noise
    noise = tf.random.stateless_uniform(refs["images"].shape, stateless_seed(SEED))
    bpd = tfp_flows.bits_per_dim(dist, refs["images"] + noise.numpy(),
                                 dequantize=False, bijector_kwargs=kw).numpy()
    np.testing.assert_allclose(refs["bits_per_dim"], bpd, rtol=EAGER_RTOL)
    np.testing.assert_allclose(
        refs["bits_per_dim"],
        bits_per_dim_with_seed(dist, refs["images"], SEED, LABELS).numpy(),
        rtol=EAGER_RTOL)
    eager_samples = sample_with_seed(dist, 3, TEMPERATURE, SEED, SAMPLE_LABELS)
    # pixel-unit samples in [~-10, ~30]: float32 round-off, eager vs graph
    np.testing.assert_allclose(refs["samples"], eager_samples.numpy(),
                               rtol=1e-5, atol=1e-4)
    # a different seed gives different samples, the same seed the same ones
    other = exported["module"].sample(3, TEMPERATURE, SEED + 1, SAMPLE_LABELS)
    assert not np.allclose(other["samples"].numpy(), refs["samples"])
    # encode = tfp_flows.encode (flat + per level), decode inverts it
    lat = flow_ops.encode(dist, x, kw)
    np.testing.assert_allclose(refs["encode_latent"], lat.flat.numpy(),
                               rtol=1e-5, atol=1e-5)
    for i, level in enumerate(lat.levels):
        np.testing.assert_allclose(refs[f"encode_level_{i + 1}"], level.numpy(),
                                   rtol=1e-5, atol=1e-5)
    # round trip in pixel units: float32 error of ~10 layers on values ~10
    np.testing.assert_allclose(refs["decode"], x, atol=1e-3)
    levels = [refs[f"encode_level_{i + 1}"] for i in range(len(lat.levels))]
    decoded = exported["module"].decode_levels(*levels, LABELS)["x"].numpy()
    np.testing.assert_allclose(decoded, x, atol=1e-3)


_RELOAD_SCRIPT = textwrap.dedent("""
    import importlib, sys
    # tfp_flows, TFP and Keras must not be needed to load and serve the model
    for name in ("tfp_flows", "tensorflow_probability", "tf_keras", "keras"):
        sys.modules[name] = None
    try:
        importlib.import_module("tfp_flows")
    except ImportError:
        pass
    else:
        raise SystemExit("tfp_flows is importable in the reload process")
    import numpy as np
    import tensorflow as tf
    path, refs_path, out_path = sys.argv[1:4]
    seed, temperature = int(sys.argv[4]), float(sys.argv[5])
    refs = np.load(refs_path)
    m = tf.saved_model.load(path)
    sig = m.signatures
    out = {"signatures": np.array(sorted(sig.keys()))}
    x = tf.constant(refs["x"])
    labels = tf.constant(refs["labels"])
    out["log_prob"] = sig["log_prob"](x=x, labels=labels)["log_prob"].numpy()
    out["log_prob_1"] = sig["log_prob"](x=x[:1], labels=labels[:1])["log_prob"].numpy()
    out["bits_per_dim"] = sig["bits_per_dim"](
        images=tf.constant(refs["images"]), seed=tf.constant(seed, tf.int64),
        labels=labels)["bits_per_dim"].numpy()
    out["samples"] = sig["sample"](
        num=tf.constant(3), temperature=tf.constant(temperature),
        seed=tf.constant(seed, tf.int64),
        labels=tf.constant(refs["sample_labels"]))["samples"].numpy()
    enc = sig["encode"](x=x, labels=labels)
    out.update({"encode_" + k: v.numpy() for k, v in enc.items()})
    out["decode"] = sig["decode"](latent=enc["latent"], labels=labels)["x"].numpy()
    levels = {k: v for k, v in enc.items() if k.startswith("level_")}
    out["decode_levels"] = sig["decode_levels"](labels=labels, **levels)["x"].numpy()
    meta = m.metadata()
    out["config_json"] = np.array(meta["config_json"].numpy().decode())
    out["num_bins"] = meta["num_bins"].numpy()
    out["modules_loaded"] = np.array(sorted(
        n for n in ("tensorflow_probability", "tfp_flows", "keras", "tf_keras")
        if sys.modules.get(n) is not None))
    np.savez(out_path, **out)
""")


def test_reload_in_a_process_without_tfp_flows(exported):
    root, refs = exported["root"], exported["refs"]
    out_path = root / "reloaded.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, exported["path"],
         str(root / "refs.npz"), str(out_path), str(SEED), str(TEMPERATURE)],
        cwd=str(root), env=_subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out_path)
    assert list(got["signatures"]) == ["bits_per_dim", "decode", "decode_levels",
                                       "encode", "log_prob", "sample"]
    assert got["modules_loaded"].size == 0
    # the tolerance the issue asks for; the graphs are the same, so this is
    # in fact exact on one machine
    np.testing.assert_allclose(got["log_prob"], refs["log_prob"], rtol=1e-5)
    np.testing.assert_allclose(got["log_prob_1"], refs["log_prob_1"], rtol=1e-5)
    np.testing.assert_allclose(got["bits_per_dim"], refs["bits_per_dim"], rtol=1e-5)
    np.testing.assert_array_equal(got["samples"], refs["samples"])
    for key in refs:
        if key.startswith("encode_"):
            np.testing.assert_allclose(got[key], refs[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["decode"], refs["decode"], rtol=1e-5, atol=1e-5)
    # per-level decoding of the per-level encoding reconstructs the input
    # (float32 error of ~10 layers on pixel values ~10)
    np.testing.assert_allclose(got["decode_levels"], refs["x"], atol=1e-3)
    config = json.loads(str(got["config_json"]))
    assert config["model"] == "glow" and config["num_classes"] == 3
    assert float(got["num_bins"]) == NUM_BINS
    rebuilt = tfp_flows.models.from_config(config)
    assert rebuilt.event_shape == exported["dist"].event_shape


def _cli(*args, cwd):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    assert os.path.exists(cli), f"saved_model_cli not found next to {sys.executable}"
    proc = subprocess.run([cli, *args], cwd=cwd, env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_saved_model_cli_show_and_run(exported):
    root, refs, path = exported["root"], exported["refs"], exported["path"]
    shown = _cli("show", "--dir", path, "--all", cwd=str(root))
    for name in ("log_prob", "bits_per_dim", "sample", "encode", "decode",
                 "decode_levels"):
        assert f"signature_def['{name}']" in shown
    for key in ("inputs['x']", "inputs['labels']", "inputs['images']",
                "inputs['seed']", "inputs['num']", "inputs['temperature']",
                "inputs['latent']", "outputs['level_2']", "outputs['samples']"):
        assert key in shown, key
    assert "shape: (-1, 8, 8, 1)" in shown  # variable batch size
    outdir = root / "cli_out"
    _cli("run", "--dir", path, "--tag_set", "serve", "--signature_def", "sample",
         "--input_exprs",
         f"num=3;temperature={TEMPERATURE};seed={SEED};labels={SAMPLE_LABELS.tolist()}",
         "--outdir", str(outdir), "--overwrite", cwd=str(root))
    np.testing.assert_array_equal(np.load(outdir / "samples.npy"), refs["samples"])


def test_serving_rejects_bad_inputs(exported):
    module, refs = exported["module"], exported["refs"]
    x = refs["x"].copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        module.log_prob(x, LABELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_bins=17"):
        module.bits_per_dim(refs["images"] + NUM_BINS, SEED, LABELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        module.bits_per_dim(refs["images"] - NUM_BINS, SEED, LABELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
        module.sample(3, -1.0, SEED, SAMPLE_LABELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one entry per sample"):
        module.sample(4, 1.0, SEED, SAMPLE_LABELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one entry per input"):
        module.log_prob(refs["x"], LABELS[:2])


class _FlowModelLike:
    """Stands in for a Keras FlowModel: anything with `.distribution`."""

    def __init__(self, dist):
        self.distribution = dist


def test_vector_flow_export_overwrite_and_duck_typing(tmp_path):
    tf.random.set_seed(1)
    dist = tfp_flows.models.vector_flow(3, num_couplings=2, hidden_units=8)
    for v in dist.trainable_variables:
        v.assign(0.1 * tf.random.normal(v.shape, seed=2))
    path = tmp_path / "vec"
    module = tfp_flows.export(_FlowModelLike(dist), path)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    with pytest.raises(ExportPathExistsError, match="overwrite=True") as err:
        tfp_flows.export(dist, path)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileExistsError)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a model")
    with pytest.raises(ExportPathExistsError):
        tfp_flows.export(dist, a_file)
    assert a_file.read_text() == "not a model"
    # overwrite with changed parameters: the new values are what loads
    for v in dist.trainable_variables:
        v.assign_add(tf.ones_like(v) * 0.01)
    module = tfp_flows.export(dist, path, overwrite=True)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export-")]
    loaded = tf.saved_model.load(str(path))
    expected = dist.log_prob(x).numpy()
    got = loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # no pixel bins: bits_per_dim is the continuous -log p(x) / (D log 2)
    bpd = loaded.signatures["bits_per_dim"](x=tf.constant(x))["bits_per_dim"].numpy()
    np.testing.assert_allclose(bpd, -expected / (3 * np.log(2.0)), rtol=1e-5)
    assert "decode_levels" not in loaded.signatures
    config = json.loads(loaded.metadata()["config_json"].numpy().decode())
    assert tfp_flows.models.from_config(config).event_shape == [3]
    s_loaded = loaded.signatures["sample"](
        num=tf.constant(5), temperature=tf.constant(1.0),
        seed=tf.constant(7, tf.int64))["samples"].numpy()
    np.testing.assert_array_equal(s_loaded, module.sample(5, 1.0, 7)["samples"].numpy())
    assert s_loaded.shape == (5, 3)
    z = loaded.signatures["encode"](x=tf.constant(x))["latent"]
    back = loaded.signatures["decode"](latent=z)["x"].numpy()
    np.testing.assert_allclose(back, x, atol=1e-5)  # float32 round trip on N(0,1) data


def test_nice_on_images_exports_with_flat_latents(tmp_path):
    # NICE models images through a flat latent ([784] on 28x28x1): decode's
    # signature takes the base distribution's shape, not the image's (the
    # first MNIST NICE run failed at export with "latents must have shape
    # [batch..., 784]; got (None, 28, 28, 1)")
    dist = tfp_flows.models.nice([4, 4, 1], num_bins=256)
    x = (np.random.default_rng(0).integers(0, 256, (6, 4, 4, 1)) + 0.5).astype(np.float32)
    tfp_flows.initialize(dist, tf.constant(x))
    tfp_flows.export(dist, tmp_path / "nice")
    loaded = tf.saved_model.load(str(tmp_path / "nice"))
    z = loaded.signatures["encode"](x=tf.constant(x))["latent"]
    assert z.shape == (6, 16)
    back = loaded.signatures["decode"](latent=z)["x"].numpy()
    np.testing.assert_allclose(back, x, atol=1e-3)  # float32 round trip on pixel values < 256
    np.testing.assert_allclose(loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"].numpy(),
                               dist.log_prob(x).numpy(), rtol=1e-5)


def test_export_rejects_what_it_cannot_serve(tmp_path):
    import tensorflow_probability as tfp
    with pytest.raises(ValueError, match="distribution"):
        tfp_flows.export(object(), tmp_path / "a")
    with pytest.raises(ValueError, match="TransformedDistribution"):
        tfp_flows.export(tfp.distributions.Normal(0.0, 1.0), tmp_path / "b")
    fresh = tfp_flows.models.glow([4, 4, 1], num_levels=1, num_steps=1,
                                  hidden_channels=4, num_bins=4)
    with pytest.raises(ValueError, match="not initialised"):
        ServingModule(fresh)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
