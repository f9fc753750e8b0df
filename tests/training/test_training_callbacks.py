"""Callbacks: sample-grid PNGs, TensorBoard image summaries, linear warmup."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfp_flows
from tests.training import training_helpers as th
from tfp_flows.plots import image_grid
from tfp_flows.training import FlowModel, LinearWarmup, SampleGrid, TensorBoardSamples


class _RecordRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate)))


def _image_summaries(log_dir, tag):
    """{step: decoded image} of the image summary `tag` in `log_dir`."""
    out = {}
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    # tf.summary.image stores [width, height, png bytes...]
                    png = tf.make_ndarray(value.tensor)[2]
                    out[event.step] = tf.io.decode_png(png).numpy()
    return out


def test_sample_grid_tensorboard_and_warmup_during_fit(tmp_path):
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    grid_cb = SampleGrid(tmp_path / "png", num_samples=4, temperature=0.7)
    tb_cb = TensorBoardSamples(tmp_path / "tb", num_samples=4, temperature=0.7)
    warmup = LinearWarmup(1e-2, warmup_steps=3)
    record = _RecordRate()
    hist = model.fit(th.pixels(16), batch_size=8, epochs=2, verbose=0,
                     callbacks=[warmup, record, grid_cb, tb_cb])

    # Linear ramp over optimizer steps 0, 1, 2, then the peak.
    np.testing.assert_allclose(record.rates, [1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2],
                               rtol=1e-6)
    assert hist.history["learning_rate"] == pytest.approx([2e-2 / 3, 1e-2])

    # One PNG per epoch: a 2x2 grid of 8x8 grey images.
    names = sorted(os.listdir(tmp_path / "png"))
    assert names == ["samples_epoch0001.png", "samples_epoch0002.png"]
    last = np.asarray(Image.open(tmp_path / "png" / names[-1]))
    assert last.shape == (16, 16) and last.dtype == np.uint8
    # Fixed seed: the file is exactly the grid of a fresh draw from the final
    # model at the same temperature.
    again = tfp_flows.sample(model.distribution, 4, 0.7, seed=(0, 0))
    np.testing.assert_array_equal(last, image_grid(again.numpy(), 17)[..., 0])
    assert last.std() > 0

    images = _image_summaries(str(tmp_path / "tb"), "samples/temperature_0.7")
    assert sorted(images) == [1, 2]
    np.testing.assert_array_equal(images[2][..., 0], last)


def test_warmup_follows_restored_iterations():
    model = FlowModel(th.tiny_glow())
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    warmup = LinearWarmup(0.5, warmup_steps=10)
    warmup.set_model(model)
    for step, expected in [(0, 0.05), (4, 0.25), (9, 0.5), (50, 0.5)]:
        model.optimizer.iterations.assign(step)
        warmup.on_train_batch_begin(0)
        assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(expected)
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmup(0.1, 0)


def test_image_grid_maps_bins_to_bytes_and_pads():
    images = np.array([0.0, 16.9, -3.0, 20.0, 8.5], np.float32).reshape(5, 1, 1, 1)
    grid = image_grid(images[:3], num_bins=17)
    # floor, clip to [0, 16], scale by 255/16; 3 images -> 2x2, last cell black
    np.testing.assert_array_equal(grid[..., 0], [[0, 255], [0, 0]])
    np.testing.assert_array_equal(image_grid(images, 17, num_cols=5)[..., 0],
                                  [[0, 255, 0, 255, 128]])
    with pytest.raises(ValueError, match="shape"):
        image_grid(np.zeros((2, 4, 4, 2)), 17)
    with pytest.raises(ValueError, match="temperature"):
        SampleGrid("x", temperature=-1.0)
