"""python -m gmsop_keras.convert_matconvnet: the authors' MatConvNet DagNN model -> a Keras model.

    python -m gmsop_keras.convert_matconvnet --model resnet18 --head gm-gap-16-8 net.mat --output model.keras

Reads the `net` structure the official trainer saves (`cnn_train_GM_dag.m`: `net = net_.saveobj();
save(f, 'net', 'state')`, MATLAB's v7 format), checks that its layers are the ones
`cnn_init_resnet_GM.m` builds for the named model (refusing, with the first layer that differs,
a file of another architecture), and copies every param into the model built by name with the
official switches (`gmsop_keras.weights.matconvnet_resnets`). The `.keras` model takes raw RGB
images in [0, 255] (input `image`) and subtracts the training set's RGB mean, which the file
records (`meta.normalization.averageImage`; `--mean` overrides it), with no division by a
standard deviation, as the official input. See docs/pretrained.md for the released model.
"""

import argparse
import os
import sys

import numpy as np

from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.models.names import parse_head
from gmsop_keras.training.errors import UsageError
from gmsop_keras.weights.matconvnet_dagnn import SECTION_LENGTHS, check_architecture, official_layers, read_dagnn
from pipelines import storage

DEFAULT_IMAGE_SIZE = 64  # cnn_init_resnet_GM.m: net.meta.normalization.imageSize = [64 64 3]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.convert_matconvnet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model_file", help="the .mat file of the official model (a DagNN saved as `net`)")
    parser.add_argument("--model", required=True, help=f"the backbone it was trained as: {', '.join(SECTION_LENGTHS)}")
    parser.add_argument("--head", required=True, help="its head: gm-gap-N-K (the released model: gm-gap-16-8)")
    parser.add_argument("--output", required=True, help="the .keras file to write")
    parser.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                        help="the RGB mean subtracted from the input, [0, 255] units (default: the file's "
                             "meta.normalization.averageImage)")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".keras"):
        raise UsageError(f"--output must end in .keras, got {args.output}")
    if args.model not in SECTION_LENGTHS:
        raise UsageError(f"Unknown model: {args.model!r}. Valid models: {', '.join(SECTION_LENGTHS)}.")
    try:
        spec = parse_head(args.head)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not (spec.is_mixture and spec.pooling == "gap" and spec.top_k is not None):
        raise UsageError(f"--head {args.head}: only the official GM-GAP models (gm-gap-N-K) convert")
    if args.mean is not None and not np.all(np.isfinite(args.mean)):
        raise UsageError(f"--mean must be three finite numbers (R G B in [0, 255] units), got {args.mean}")
    dag = read_dagnn(args.model_file)
    image_size = _image_size(dag.meta)
    prediction = dag.params.get("prediction_f")
    num_classes = int(prediction.shape[3]) if prediction is not None and prediction.ndim == 4 else 1
    check_architecture(dag, official_layers(args.model, spec, num_classes, image_size), args.model_file)
    mean = args.mean if args.mean is not None else _average_image(dag.meta, args.model_file)
    load_tensorflow(args.debug)
    # Deferred: the mapping builds a Keras model; TensorFlow loads only after the file is checked.
    from gmsop_keras.weights.matconvnet_resnets import convert_dagnn  # noqa: PLC0415

    model, count = convert_dagnn(dag, args.model, args.head, num_classes, image_size, mean)
    logits = np.asarray(model(np.zeros((1, image_size, image_size, 3), np.float32), training=False))
    if logits.shape != (1, num_classes) or not np.all(np.isfinite(logits)):
        raise UsageError(f"the converted model gives logits of shape {logits.shape} (finite: "
                         f"{bool(np.all(np.isfinite(logits)))}), expected (1, {num_classes}): {args.model_file}")
    storage.makedirs(storage.dirname(args.output))
    if storage.is_url(args.output):
        model.save(args.output)  # one object write: whole or absent
    else:
        directory = os.path.dirname(os.path.abspath(args.output))
        partial = os.path.join(directory, f".{os.path.basename(args.output)}.partial.keras")
        model.save(partial)
        os.replace(partial, args.output)  # a .keras file that exists is complete
    values = sum(int(np.prod(dag.params[name].shape)) for name in dag.params)
    print(f"loaded {count} params ({values:,} values) of {args.model_file} into {args.model} + {args.head} "
          f"({image_size}x{image_size}, {num_classes} classes, input minus RGB mean "
          f"{', '.join(f'{m:.2f}' for m in mean)}): {args.output}")
    return 0


def _image_size(meta):
    """The side of the training images, `meta.normalization.imageSize(1)` (64 where the file lacks it)."""
    normalization = meta.get("normalization")
    size = normalization.get("imageSize") if isinstance(normalization, dict) else None
    values = np.ravel(np.asarray(size, dtype=np.float64)) if size is not None else ()
    return int(values[0]) if len(values) else DEFAULT_IMAGE_SIZE


def _average_image(meta, path):
    normalization = meta.get("normalization")
    average = normalization.get("averageImage") if isinstance(normalization, dict) else None
    values = np.ravel(np.asarray(average, dtype=np.float64)) if average is not None else np.zeros(0)
    if values.size != 3:
        raise UsageError(f"{path} records no RGB mean (meta.normalization.averageImage has {values.size} values, "
                         "expected 3): give the training set's with --mean R G B")
    return [float(v) for v in values]


def console_main():
    """The `gmsop-convert-matconvnet` console script."""
    sys.exit(run_cli(main, output_flag="--output"))


if __name__ == "__main__":
    console_main()
