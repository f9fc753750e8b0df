"""The layer benchmark (benchmarks/layers.py) compares equal computations:
both variants of the hidden 1x1 layer give the same values and gradients,
and its whole-model variant really traces TensorFlow's convolution."""

import numpy as np
import pytest

from tests.script_loader import load_script


@pytest.fixture(scope="module")
def layers():
    return load_script("benchmarks", "layers")


def test_hidden_layer_shapes_follow_the_levels(layers):
    assert layers.hidden_layer_shapes("cifar") == [
        (32, 16, 16, 128), (32, 8, 8, 128), (32, 4, 4, 128)]


def test_both_variants_give_the_same_layer_and_gradients(layers):
    shape = (3, 4, 4, 8)
    want, got = (layers.layer_step(layers.VARIANTS[name], shape)()
                 for name in ("conv2d", "matmul"))
    for a, b in zip(want, got):
        # float32 sums of 8 products and their gradients: ~1e-6 relative
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def _one_by_one_convolutions(step):
    graph = step.get_concrete_function().graph
    return [op for op in graph.get_operations() if op.type == "Conv2D"
            and op.inputs[1].shape[:2] == (1, 1)]


def test_model_steps_trace_the_hidden_layer_either_way(layers, monkeypatch):
    monkeypatch.setitem(layers.CONFIGS, "tiny", dict(shape=(4, 4, 1), levels=1, steps=2,
                                                      hidden=8, batch=2))
    conv2d, matmul = (layers.model_step("tiny", name) for name in ("conv2d", "matmul"))
    assert len(_one_by_one_convolutions(conv2d)) == 2  # one per coupling
    assert not _one_by_one_convolutions(matmul)
    # the patch is undone: later traces take conv2d_same's own path
    assert layers.convolution._conv2d_1x1.__name__ == "_conv2d_1x1"
