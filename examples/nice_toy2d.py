"""NICE on 2-D toy densities, with density plots.

NICE (Dinh et al., 2014): additive couplings with alternating partitions and a
diagonal scaling, over a logistic prior. On continuous 2-D data there is no
dequantisation (``FlowModel(dequantize=False)``) and no pixel rescaling
(``n_bits=None``). The figure shows the data, the learned density
``exp(log p(x))`` on a grid, and samples of the model.

Usage::

    python examples/nice_toy2d.py                         # two moons, ~1 min
    python examples/nice_toy2d.py --dataset checkerboard
    python examples/nice_toy2d.py --smoke                 # seconds

Output: ``--out`` (default ``runs/example-nice-<dataset>.png``).
"""

import argparse
import os

import keras
import numpy as np

import tfp_flows

__all__ = ["main", "plot"]


def plot(dist, data, path, title, limit=3.0, grid=200):
    """Data histogram | model density on a grid | model samples, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ticks = np.linspace(-limit, limit, grid, dtype=np.float32)
    xx, yy = np.meshgrid(ticks, ticks)
    points = np.stack([xx.ravel(), yy.ravel()], axis=-1)
    density = np.exp(dist.log_prob(points).numpy()).reshape(grid, grid)
    samples = dist.sample(len(data), seed=0).numpy()

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    extent = (-limit, limit, -limit, limit)
    panels = fig.subplots(1, 3)
    panels[0].hist2d(data[:, 0], data[:, 1], bins=grid // 2, range=[extent[:2], extent[2:]])
    panels[0].set_title("data")
    panels[1].imshow(density, origin="lower", extent=extent)
    panels[1].set_title("model density exp(log p)")
    panels[2].hist2d(samples[:, 0], samples[:, 1], bins=grid // 2,
                     range=[extent[:2], extent[2:]])
    panels[2].set_title("model samples")
    for ax in panels:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return density


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="two_moons",
                        choices=tfp_flows.data.toy2d.DATASETS)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", f"example-nice-{args.dataset}.png")
    keras.utils.set_random_seed(0)

    train = tfp_flows.data.load(args.dataset, "train", batch_size=256, seed=0)
    validation = tfp_flows.data.load(args.dataset, "validation", batch_size=1000)
    test = tfp_flows.data.load(args.dataset, "test", batch_size=1000)
    size = dict(num_couplings=4, hidden_units=128, num_hidden_layers=3)
    epochs = args.epochs
    if args.smoke:
        size, epochs, train = dict(num_couplings=2, hidden_units=8, num_hidden_layers=1), 1, \
            train.take(3)

    # Continuous data in R^2: no pixel bins.
    dist = tfp_flows.models.nice([2], n_bits=None, **size)
    model = tfp_flows.FlowModel(dist, dequantize=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=epochs, validation_data=validation, shuffle=False, verbose=2)
    nll = model.evaluate(test, verbose=0, return_dict=True)["loss"]
    print(f"test negative log-likelihood: {nll:.3f} nats")

    data = np.concatenate([np.asarray(b) for b in test])
    plot(dist, data, out, f"NICE on {args.dataset} (test NLL {nll:.2f} nats)")
    print(f"wrote {out}")
    return {"test_nll": float(nll), "out": out}


if __name__ == "__main__":
    main()
