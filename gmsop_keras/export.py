"""python -m gmsop_keras.export: a trained model -> a SavedModel that TF Serving and plain TensorFlow load.

    python -m gmsop_keras.export runs/imagenet64-resnet18-gm-sop-16-8 --output saved_models/gmsop
    python -m gmsop_keras.export runs/places/best.keras --output saved_models/places --data-dir data/places365

Writes `OUTPUT/<version>/` (the next free integer unless `--version` is given), the layout TF Serving
watches. Signature `serving_default`: input `image`, uint8 [None, H, W, 3] (H, W: the model's input
size); outputs `logits` and `probabilities` [None, C], the top-5 `classes` (int32) and their `scores`.
Inference mode: no gate noise, BatchNorm with its moving statistics. `assets/class_names.txt` (when
the dataset's manifest has names) and `assets/preprocessing.json` tell `gmsop_keras.predict` how to
prepare image files. Loading the SavedModel needs only TensorFlow. See docs/serving.md.
"""

import argparse
import os
import sys

from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.serving.paths import resolve_model_path
from gmsop_keras.training.data import find_manifest
from gmsop_keras.training.errors import UsageError
from pipelines import storage

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file, or a model dir (its best.keras, else final.keras)")
    parser.add_argument("--output", help="model folder receiving the numbered version "
                                         "(default: saved_models/<name of the model dir>)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--data-dir", help="the dataset the model was trained on, for class names and "
                                           "image size (default: the data dir in the model dir's config.yaml)")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.version is not None and args.version < 1:
        raise UsageError(f"--version must be a positive integer, got {args.version}")
    path = resolve_model_path(args.model)
    model_dir = storage.dirname(path)
    output = args.output or os.path.join("saved_models", storage.basename(model_dir))
    if args.version is not None and storage.exists(storage.join(output, str(args.version))):  # before loading
        raise UsageError(f"{storage.join(output, str(args.version))} exists; versions are never overwritten, "
                         "choose another --version")
    manifest = find_manifest(args.data_dir, model_dir)
    load_tensorflow(args.debug)
    # Deferred: loading and exporting import TensorFlow, which loads only after the checks above.
    from gmsop_keras.serving.export import export_model  # noqa: PLC0415
    from gmsop_keras.serving.loading import load_run_model  # noqa: PLC0415

    model, path = load_run_model(args.model, path)
    num_classes = int(model.output_shape[-1])
    if manifest is not None and manifest["num_classes"] != num_classes:
        source = args.data_dir or "the dataset of its config.yaml"
        raise UsageError(f"model {path} predicts {num_classes} classes, but {source} has "
                         f"{manifest['num_classes']}; pass --data-dir with the dataset the model was trained on")
    try:
        written = export_model(model, output, version=args.version, manifest=manifest)
    except ValueError as error:  # a model without a fixed image size, class names that do not fit
        raise UsageError(f"cannot export {path}: {error}") from None
    if manifest is None or not manifest.get("class_names"):
        print("note: no class names (pass --data-dir with a dataset whose manifest has them)", file=sys.stderr)
    print(written)
    return 0


def console_main():
    """The `gmsop-export` console script."""
    sys.exit(run_cli(main, output_flag="--output"))


if __name__ == "__main__":
    console_main()
