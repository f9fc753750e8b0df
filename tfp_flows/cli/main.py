"""The ``tfp-flows`` command: train, sample, evaluate, export, interpolate.

::

    tfp-flows train [--model glow|real_nvp|nice] [--dataset digits]
                    [--epochs N] [--batch-size B] [--out DIR] ...
    tfp-flows sample DIR --num 64 --temperature 0.7 --out FILE.png
    tfp-flows evaluate DIR [--dataset D --split S]
    tfp-flows export DIR PATH
    tfp-flows interpolate DIR [--pairs 4 --steps 8 --out FILE.png]

A bare ``tfp-flows train`` trains Glow on the scikit-learn digits offline
(:mod:`tfp_flows.cli.recipes`) into ``runs/glow-digits``; the default run folder
is ``runs/<model>-<dataset>``. An existing run folder
is resumed, never overwritten (:mod:`tfp_flows.cli.runs`). Bad arguments and
expected failures print one line, ``tfp-flows <command>: error: ...``, and
exit with status 2 (arguments) or 1 (everything else), without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

import tfp_flows
from tfp_flows import data, plots
from tfp_flows.cli import recipes, trainer
from tfp_flows.training.guards import TrainingDivergedError

__all__ = ["main", "build_parser"]

_PROG = "tfp-flows"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(least, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_count = _int_at_least(0, "an integer >= 0")


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(minimum, strict):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not np.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>' if strict else '>='} {minimum:g}, got {text!r}")
        return value
    return parse


def _decay(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a decay in [0, 1), got {text!r}")
    return value


def _model_arg(text):
    """``KEY=VALUE``; VALUE is read as JSON (numbers, true/false, null), else
    kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``tfp-flows`` command."""
    parser = _Parser(prog=_PROG, description="Train and use normalizing flows "
                     "(NICE, RealNVP, Glow) built on TensorFlow Probability.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a flow into a run folder (resumes "
                       "an existing one)", description="Train a flow. A bare "
                       "'tfp-flows train' fits Glow on the digits, offline, in a "
                       "few minutes on a CPU. Unset options take the recipe's "
                       "defaults (new run) or the run's stored values (resume).")
    p.add_argument("--model", choices=recipes.MODELS,
                   help="flow to train (default: glow)")
    p.add_argument("--dataset", help="dataset name (default: digits; also "
                   "mnist and fashion_mnist from their IDX files with --data-dir, "
                   "or cifar10, celeb_a, imagenet32, imagenet64 through "
                   "tensorflow-datasets), or the PATH of a folder of PNG/JPEG "
                   "images or a .npy/.npz file")
    p.add_argument("--data-dir", help="folder holding the dataset's files "
                   "(MNIST/Fashion-MNIST IDX files, or a tfds data dir); stored "
                   "with the run, and may change when resuming")
    p.add_argument("--epochs", type=_positive_int,
                   help="total epochs (default: 60 on digits, 10 elsewhere); "
                   "raise it to extend a finished run")
    p.add_argument("--batch-size", type=_positive_int, help="default: 64")
    p.add_argument("--learning-rate", type=_float(0.0, True),
                   help="Adam's peak learning rate (default: 1e-3)")
    p.add_argument("--warmup-steps", type=_positive_int,
                   help="linear learning-rate warmup steps (default: 100)")
    p.add_argument("--n-bits", type=_positive_int,
                   help="bit depth of 8-bit datasets, 1..8 (default: 8)")
    p.add_argument("--image-size", type=_positive_int,
                   help="image side for celeb_a (default: 64) and for your own "
                   "images (centre crop, then resize)")
    p.add_argument("--skip-bad-files", action="store_true", default=None,
                   help="for a folder of images: skip corrupt files (listed in a "
                   "warning) instead of stopping")
    p.add_argument("--model-arg", type=_model_arg, action="append",
                   metavar="KEY=VALUE",
                   help="builder argument, repeatable, e.g. --model-arg "
                   "num_steps=32 --model-arg hidden_channels=512")
    p.add_argument("--dequantization", choices=recipes.DEQUANTIZATIONS,
                   help="uniform noise (default; the papers' bits/dim) or a "
                   "learned noise distribution q(u|x) trained with the flow "
                   "(Flow++); with 'variational' every bits/dim is the "
                   "variational bound")
    p.add_argument("--importance-samples", type=_count, metavar="K",
                   help="also score the test split with the importance-weighted "
                   "estimate from K noise draws (default: 0, off)")
    p.add_argument("--precision", choices=recipes.PRECISIONS,
                   help="dtype policy of the coupling networks (default: "
                   "float32); mixed_bfloat16 computes them in bfloat16 (fast "
                   "on CPUs with AMX and on TPUs/GPUs with bfloat16), with "
                   "float32 variables, log-dets and priors; may change on resume")
    p.add_argument("--clip-norm", type=_float(0.0, False), metavar="N",
                   help="scale each step's gradients down to global norm N when "
                   "larger (default: off; 0 turns it off); guards against rare "
                   "huge gradients that spike the loss; may change on resume")
    p.add_argument("--ema", type=_decay, metavar="DECAY",
                   help="Polyak averaging: keep an exponential moving average of "
                   "the weights with this decay, e.g. 0.999, and validate, test, "
                   "sample and export with it (default: 0.99 on digits, else "
                   "off; 0 turns it off; fixed for a run)")
    p.add_argument("--checkpoint-minutes", type=_float(0.0, False), metavar="M",
                   help="also checkpoint inside an epoch every M minutes, so that "
                   "a kill loses at most that (default: 10; 0: only at epoch "
                   "ends); may change on resume")
    p.add_argument("--seed", type=_int, help="default: 0")
    p.add_argument("--temperature", type=_float(0.0, False),
                   help="temperature of samples.png (default: 0.7)")
    p.add_argument("--out", help="run folder (default: runs/<model>-<dataset>, "
                   "e.g. runs/glow-digits)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2),
                   help="Keras verbosity: 1 progress bar (default on a "
                   "terminal), 2 one line per epoch (default otherwise)")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="write a grid of samples as PNG")
    p.add_argument("dir", help="run folder")
    p.add_argument("--num", type=_positive_int, default=64)
    p.add_argument("--temperature", type=_float(0.0, False), default=0.7)
    p.add_argument("--seed", type=_int, default=0)
    p.add_argument("--out", help="PNG file (default: DIR/samples_t<T>.png)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("evaluate", help="print bits/dim on a dataset split")
    p.add_argument("dir", help="run folder")
    p.add_argument("--dataset", help="default: the run's dataset")
    p.add_argument("--split", default="test", help="default: test")
    p.add_argument("--data-dir", help="default: the run's")
    p.add_argument("--draws", type=_positive_int, default=3,
                   help="dequantisation noise draws to average (default: 3)")
    p.add_argument("--seed", type=_int, default=0)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="export the latest checkpoint as a "
                       "SavedModel (never overwrites silently)")
    p.add_argument("dir", help="run folder")
    p.add_argument("path", help="SavedModel directory to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace PATH if it exists")
    p.set_defaults(func=_export)

    p = sub.add_parser("interpolate", help="write latent interpolations "
                       "between test images as a PNG strip")
    p.add_argument("dir", help="run folder")
    p.add_argument("--pairs", type=_positive_int, default=4,
                   help="image pairs, one row each (default: 4)")
    p.add_argument("--steps", type=_positive_int, default=8,
                   help="points per row, endpoints included (default: 8)")
    p.add_argument("--method", choices=("linear", "slerp"), default="linear")
    p.add_argument("--split", default="test", help="where the endpoints come from")
    p.add_argument("--seed", type=_int, default=0, help="picks the pairs")
    p.add_argument("--out", help="PNG file (default: DIR/interpolation.png)")
    p.set_defaults(func=_interpolate)
    return parser


def _say(message):
    print(message, flush=True)


def _warn(message):
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)


# -- commands -----------------------------------------------------------------------
def _train(args):
    keys = ("model", "dataset", "epochs", "batch_size", "learning_rate",
            "warmup_steps", "n_bits", "image_size", "skip_bad_files", "seed",
            "temperature", "dequantization", "importance_samples", "precision",
            "clip_norm", "ema", "checkpoint_minutes")
    requested = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.model_arg:
        requested["model_args"] = dict(args.model_arg)
    if "dataset" in requested and data.files.is_path(requested["dataset"]):
        requested["dataset"] = os.path.abspath(requested["dataset"])
    if args.data_dir is not None:
        requested["data_dir"] = os.path.abspath(args.data_dir)
    verbose = args.verbose
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    out = args.out or recipes.default_run_folder(args.model, args.dataset)
    trainer.train(out, requested, verbose=verbose, log=_say)


def _open(path):
    return trainer.open_run(path, log=_warn)


def _sample(args):
    folder, _, model, checkpoint = _open(args.dir)
    dist = model.distribution
    x = tfp_flows.sample(dist, args.num, args.temperature, seed=args.seed)
    out = args.out or folder.file(f"samples_t{args.temperature:g}.png")
    plots.save_image_grid(np.asarray(x), trainer.image_bins(dist), out)
    _say(f"wrote {args.num} samples at temperature {args.temperature:g} "
         f"(epoch {checkpoint.epoch}) to {out}")


def _evaluate(args):
    _, config, model, checkpoint = _open(args.dir)
    base = data.info(args.dataset or config["dataset"])
    same = base.name == config["dataset"]
    image_size = config["image_size"] if same else None
    n_bits = config["n_bits"] if base.n_bits is not None else 8
    info = data.info(base.name, n_bits, image_size)
    event = tuple(model.distribution.event_shape.as_list())
    bins = tfp_flows.flow_ops.num_bins(model.distribution)
    if tuple(info.shape) != event or info.num_bins != bins:
        raise ValueError(
            f"the model of {args.dir} takes {'x'.join(map(str, event))} images "
            f"with {bins:g} levels; {info.name} gives "
            f"{'x'.join(map(str, info.shape))} images with {info.num_bins} levels.")
    data_dir = args.data_dir or (config.get("data_dir") if same else None)
    ds = data.load(info.name, args.split, 256, n_bits=n_bits, image_size=image_size,
                   data_dir=data_dir)
    bpd = trainer.evaluate_bits_per_dim(model, ds, args.draws, args.seed)
    _say(f"{bpd:.4f} bits/dim on {info.name} '{args.split}' (checkpoint of "
         f"epoch {checkpoint.epoch}, mean over {args.draws} dequantisation draws)")


def _export(args):
    if os.path.lexists(args.path) and not args.overwrite:  # before loading
        raise FileExistsError(f"export path {args.path} already exists; pass "
                              "--overwrite to replace it.")
    _, _, model, checkpoint = _open(args.dir)
    tfp_flows.export(model, args.path, overwrite=args.overwrite)
    _say(f"exported the checkpoint of epoch {checkpoint.epoch} to {args.path}")


def _interpolate(args):
    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}.")
    folder, config, model, _ = _open(args.dir)
    images = np.concatenate([np.asarray(b) for b in
                             recipes.datasets(config, split=args.split).take(8)])
    if len(images) < 2 * args.pairs:
        raise ValueError(f"the '{args.split}' split has {len(images)} images "
                         f"here; --pairs {args.pairs} needs {2 * args.pairs}.")
    pick = np.random.default_rng(args.seed).choice(len(images), 2 * args.pairs,
                                                   replace=False)
    x = images[pick] + 0.5  # bin centres: the endpoints decode to the images
    dist = model.distribution
    z = tfp_flows.interpolate(dist, x[:args.pairs], x[args.pairs:],
                              steps=args.steps, method=args.method)
    rows = np.swapaxes(np.asarray(z), 0, 1)  # [pairs, steps, H, W, C]
    out = args.out or folder.file("interpolation.png")
    plots.save_image_grid(rows.reshape((-1,) + rows.shape[2:]),
                          trainer.image_bins(dist), out, num_cols=args.steps)
    _say(f"wrote {args.pairs} interpolations of {args.steps} steps to {out}")


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
      argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
      0 on success, 1 for a failure of the command (a one-line message on
      stderr), 130 when interrupted.

    Raises:
      SystemExit: with status 2 for bad arguments (one line on stderr), or 0
        after ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is required: train, sample, evaluate, export "
                     "or interpolate")
    try:
        args.func(args)
    except (ValueError, OSError, TrainingDivergedError) as e:
        print(f"{_PROG} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG} {args.command}: interrupted; run the same command to "
              "resume from the last checkpoint.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
