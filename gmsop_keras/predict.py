"""python -m gmsop_keras.predict: top-5 classes of image files from a trained model or its export.

    python -m gmsop_keras.predict runs/synthetic-resnet18-gm-sop-16-8 photo.jpg
    python -m gmsop_keras.predict runs/synthetic-resnet18-gm-sop-16-8/final.keras photo.jpg
    python -m gmsop_keras.predict saved_models/gmsop photo.jpg scans/*.png
    python -m gmsop_keras.predict saved_models/gmsop/3 photo.jpg --json

MODEL is what `python -m gmsop_keras.fit` left: a run directory (its best.keras, else final.keras) or a
`.keras` file, whose class names and preprocessing come from the dataset named in the run's
config.yaml (or `--data-dir`); or what `python -m gmsop_keras.export` wrote: a version folder, or the
model folder above it (its newest version, as TF Serving picks). Both answer the same. Images of any
size and any format PIL reads are converted to RGB and prepared the way the dataset was: resized (bicubic, antialiased, MATLAB
`imresize` semantics) to the dataset's stored size, then centre-cropped to the model's input when that
is smaller (Places365: 100x100, then 96x96). Prints `PATH: name (score), ...` per image, or with
`--json` a JSON list of {"path", "predictions": [{"class", "name", "score"}]}. A file that cannot be
read is reported on stderr (`error: FILE: ...`) and the others are still predicted; the exit status
is then 1.
"""

import argparse
import json
import sys

from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.serving.paths import model_kind, resolve_model_path
from gmsop_keras.training.errors import UsageError
from pipelines import DataError
from pipelines.folder import load_image

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory or .keras file of `gmsop_keras.fit`, or an export of "
                                      "`gmsop_keras.export` (a version folder, or its model folder)")
    parser.add_argument("images", nargs="+", help="image files (any size, any format PIL reads)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    parser.add_argument("--batch-size", type=int, default=64, help="images per call of the model")
    parser.add_argument("--data-dir", help="with a run directory or .keras file: the dataset it was trained on, for "
                                           "class names and image size (default: the one its config.yaml names)")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    export = model_kind(args.model) == "export"
    if export and args.data_dir:
        raise UsageError(f"--data-dir is for a run directory or .keras file; the export {args.model} carries its "
                         "own class names and preprocessing")
    path = None if export else resolve_model_path(args.model)
    load_tensorflow(args.debug)
    # Deferred: the predictors import TensorFlow, which loads only after the flags are checked.
    from gmsop_keras.serving.keras_predictor import KerasPredictor  # noqa: PLC0415
    from gmsop_keras.serving.predictor import Predictor  # noqa: PLC0415

    predictor = Predictor(args.model) if export else KerasPredictor(args.model, path, args.data_dir)
    if not export and predictor.manifest is None:
        print(f"note: no dataset found for {predictor.path} (its run's config.yaml names none that exists): no "
              "class names, images resized to the model's input; pass --data-dir with its dataset",
              file=sys.stderr, flush=True)
    results, failed = [], 0
    for start in range(0, len(args.images), args.batch_size):
        batch, readable, images = [], [], []
        for path in args.images[start:start + args.batch_size]:
            try:
                images.append(load_image(path))
                batch.append({"path": path})
                readable.append(batch[-1])
            except DataError as error:
                failed += 1
                print(f"error: {error}", file=sys.stderr, flush=True)
                batch.append({"path": path, "error": str(error)})
        for result, top in zip(readable, predictor.predict(images) if images else []):
            result["predictions"] = [{"class": c, "name": name, "score": score} for c, name, score in top]
            if not args.json:
                print(f"{result['path']}: " + ", ".join(f"{_label(c, name)} ({score:.4f})" for c, name, score in top),
                      flush=True)
        results += batch
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _label(index, name):
    return name if name is not None else f"class {index}"


def console_main():
    """The `gmsop-predict` console script."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    console_main()
