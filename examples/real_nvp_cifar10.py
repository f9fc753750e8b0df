"""RealNVP on CIFAR-10 through TensorFlow Datasets.

RealNVP's multi-scale architecture (Dinh et al., 2016): checkerboard and
channel-wise affine couplings with ResNet scale/translation networks, a
squeeze and a factor-out per scale, over the logit of the dequantised pixels.
``tfp_flows.data.load('cifar10', ...)`` downloads CIFAR-10 with tfds on first
use; training on a GPU is advised (the paper's model: 3 scales, 64 channels,
8 residual blocks, bits/dim 3.49 after many GPU-days).

Usage::

    python examples/real_nvp_cifar10.py --epochs 10 --num-blocks 8
    python examples/real_nvp_cifar10.py --n-bits 5      # 32 levels, as Glow's CelebA
    python examples/real_nvp_cifar10.py --smoke         # 2 tiny steps

Output in ``--out`` (default ``runs/example-real-nvp-cifar10``):
``samples.png`` and the exported ``saved_model/``.
"""

import argparse
import os

import keras

import tfp_flows
from tfp_flows import plots

__all__ = ["main"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-bits", type=int, default=8)
    parser.add_argument("--num-scales", type=int, default=3)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument("--out", default=os.path.join("runs", "example-real-nvp-cifar10"))
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, 2 steps (tests run it on tfds mock data)")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    train, info = tfp_flows.data.load("cifar10", "train", args.batch_size,
                                      n_bits=args.n_bits, seed=0,
                                      data_dir=args.data_dir, with_info=True)
    validation = tfp_flows.data.load("cifar10", "validation", 256, n_bits=args.n_bits,
                                     data_dir=args.data_dir)
    test = tfp_flows.data.load("cifar10", "test", 256, n_bits=args.n_bits,
                               data_dir=args.data_dir)
    size = dict(num_scales=args.num_scales, hidden_channels=args.hidden_channels,
                num_blocks=args.num_blocks)
    epochs = args.epochs
    if args.smoke:
        size, epochs = dict(num_scales=1, hidden_channels=8, num_blocks=1), 1
        train, validation, test = train.take(2), validation.take(1), test.take(1)

    dist = tfp_flows.models.real_nvp(info.shape, num_bins=info.num_bins, **size)
    model = tfp_flows.FlowModel(dist)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    print(f"RealNVP on CIFAR-10 ({info.num_bins} levels): "
          f"{model.count_params():,} parameters")
    # The epoch is chosen on validation (the weights with the lowest
    # validation bits/dim are restored); the test split is scored once.
    model.fit(train, epochs=epochs, validation_data=validation, shuffle=False, verbose=2,
              callbacks=[tfp_flows.LinearWarmup(1e-3, warmup_steps=500),
                         keras.callbacks.EarlyStopping("val_bits_per_dim", mode="min", patience=5,
                                                       restore_best_weights=True)])
    bpd = model.evaluate(test, verbose=0, return_dict=True)["bits_per_dim"]
    print(f"test bits/dim: {bpd:.3f}")

    x = tfp_flows.sample(dist, 36, temperature=0.7, seed=0)
    plots.save_image_grid(x, info.num_bins, os.path.join(args.out, "samples.png"))
    tfp_flows.export(model, os.path.join(args.out, "saved_model"), overwrite=True)
    print(f"wrote {args.out}/samples.png and {args.out}/saved_model")
    return {"test_bits_per_dim": float(bpd), "out": args.out}


if __name__ == "__main__":
    main()
