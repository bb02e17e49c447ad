"""python -m gmsop_keras.predict: top-5 classes of image files from an exported SavedModel.

    python -m gmsop_keras.predict saved_models/gmsop photo.jpg scans/*.png
    python -m gmsop_keras.predict saved_models/gmsop/3 photo.jpg --json

SAVED_MODEL is a version folder written by `python -m gmsop_keras.export`, or the model folder above
it (its newest version, as TF Serving picks). Images of any size and any format PIL reads are
converted to RGB and prepared the way the dataset was: resized (bicubic, antialiased, MATLAB
`imresize` semantics) to the dataset's stored size, then centre-cropped to the model's input when that
is smaller (Places365: 100x100, then 96x96). Prints `PATH: name (score), ...` per image, or with
`--json` a JSON list of {"path", "predictions": [{"class", "name", "score"}]}. A file that cannot be
read is reported on stderr (`error: FILE: ...`) and the others are still predicted; the exit status
is then 1.
"""

import argparse
import json
import sys

from gmsop_keras.errors import UsageError, add_debug_flag, run_cli
from pipelines import storage
from pipelines.startup import load_tensorflow

SIGNATURE = "serving_default"
CLASS_NAMES_FILE = "class_names.txt"
PREPROCESSING_FILE = "preprocessing.json"


class Predictor:
    """An exported SavedModel with its preprocessing and class names; needs no Keras.

    Args:
        path: a version folder, or a folder of numbered versions (the newest is used).

    Example:

    >>> from pipelines.folder import load_image
    >>> predictor = Predictor("saved_models/gmsop")
    >>> results = predictor.predict([load_image("cat.jpg")])
    >>> results[0][0]  # best class: (index, name or None, probability)
    (281, 'n02123045', 0.83)
    """

    def __init__(self, path):
        import tensorflow as tf

        self.path = resolve_saved_model(path)
        self.signature = tf.saved_model.load(self.path).signatures[SIGNATURE]
        height, width = self.signature.structured_input_signature[1]["image"].shape[1:3]
        assets = storage.join(self.path, "assets")
        self.preprocessing = {"resize_to": [height, width], "crop_to": None}
        if storage.isfile(storage.join(assets, PREPROCESSING_FILE)):
            self.preprocessing.update(json.loads(storage.read_text(storage.join(assets, PREPROCESSING_FILE))))
        self.class_names = None
        if storage.isfile(storage.join(assets, CLASS_NAMES_FILE)):
            self.class_names = storage.read_text(storage.join(assets, CLASS_NAMES_FILE)).splitlines()

    def prepare(self, image):
        """uint8 RGB [H, W, 3] of any size -> the model's input size, as the dataset was made."""
        return prepare_image(image, self.preprocessing["resize_to"], self.preprocessing.get("crop_to"))

    def predict(self, images):
        """Top-5 `(class, name, score)` lists for a list of uint8 RGB images of any size."""
        import numpy as np
        import tensorflow as tf

        batch = np.stack([self.prepare(image) for image in images])
        outputs = self.signature(image=tf.constant(batch))
        classes, scores = outputs["classes"].numpy(), outputs["scores"].numpy()
        return [
            [(int(c), self.class_names[c] if self.class_names else None, float(s)) for c, s in zip(row, row_scores)]
            for row, row_scores in zip(classes, scores)
        ]


def resolve_saved_model(path):
    """`path` if it holds a SavedModel, else its newest complete integer-named version folder.

    A version is complete once its `saved_model.pb` exists (written last, `gmsop_keras.export`).
    """
    if storage.isfile(storage.join(path, "saved_model.pb")):
        return path
    if not storage.isdir(path):
        raise UsageError(f"SavedModel {path} not found")
    names = storage.listdir(path)
    if storage.basename(path).isdigit() and "variables" in names:
        raise UsageError(f"{path} is an incomplete export (no saved_model.pb: the export was interrupted); "
                         "export the model again, or pass the folder of its versions to use the newest complete one")
    versions = sorted((int(name) for name in names
                       if name.isascii() and name.isdigit() and storage.isfile(storage.join(path, name, "saved_model.pb"))))
    if not versions:
        raise UsageError(f"{path} holds no SavedModel (saved_model.pb) nor numbered versions of one")
    return storage.join(path, str(versions[-1]))


def prepare_image(image, resize_to, crop_to=None):
    """Resizes uint8 [H, W, 3] to `resize_to` (MATLAB bicubic imresize), then centre-crops `crop_to`."""
    from pipelines.resize import resize_images

    image = resize_images(image[None], tuple(resize_to))[0]
    if crop_to:
        # The evaluation crop of pipelines.augment.center_crop: odd margins leave the extra pixel after.
        top = (image.shape[0] - crop_to[0]) // 2
        left = (image.shape[1] - crop_to[1]) // 2
        image = image[top:top + crop_to[0], left:left + crop_to[1]]
    return image


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.predict", description=__doc__.splitlines()[0])
    parser.add_argument("saved_model", help="a version folder of `gmsop_keras.export`, or its model folder")
    parser.add_argument("images", nargs="+", help="image files (any size, any format PIL reads)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    parser.add_argument("--batch-size", type=int, default=64, help="images per call of the SavedModel")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    load_tensorflow(args.debug)
    from pipelines import DataError
    from pipelines.folder import load_image

    predictor = Predictor(args.saved_model)
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
