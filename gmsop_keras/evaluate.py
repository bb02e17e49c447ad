"""python -m gmsop_keras.evaluate: top-1 / top-5 error of a saved model on a dataset split.

    python -m gmsop_keras.evaluate runs/imagenet64-resnet18-gm-sop-16-8/best.keras \\
        --dataset imagenet64 --data-dir data/imagenet64 --split validation
    python -m gmsop_keras.evaluate MODEL --data-dir data/places365 --ten-crop

Prints one JSON object: top1_error, top5_error, num_examples, crops. Evaluation is the
paper's: the whole image (ImageNet-64) or a single centre crop (Places365); `--ten-crop`
averages the softmax over the four corner crops, the centre crop and their mirror images.
`--test-time-augment pad-crop` is the prediction stage of the starred rows of the paper's
Table 3 (Chrabaszcz et al.'s augmentation "in both training and prediction stages"): each
image is zero-padded by 4 pixels and randomly cropped back to its size, deterministically by
`--seed`; `--test-time-crops N` averages the softmax over N such crops (default 1).
"""

import argparse
import json
import sys

from gmsop_keras.errors import UsageError, add_debug_flag, run_cli
from pipelines import storage
from pipelines.augmentations import TEST_TIME_AUGMENTATIONS
from pipelines.startup import load_tensorflow


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file, or a model dir (its best.keras, else final.keras)")
    parser.add_argument("--dataset", default=None, help="imagenet64 | places365 | synthetic (informational)")
    parser.add_argument("--data-dir", required=True, help="converted TFRecords (python -m pipelines.convert)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ten-crop", action="store_true", help="10-crop evaluation (Places365)")
    parser.add_argument("--test-time-augment", choices=TEST_TIME_AUGMENTATIONS, default="none",
                        help="pad-crop: zero-pad 4 pixels, random crop back to the input size (Chrabaszcz et "
                        "al.; Table 3's starred rows); default none")
    parser.add_argument("--test-time-crops", type=int, default=1,
                        help="with --test-time-augment pad-crop: average the softmax over this many crops")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test-time crops (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="evaluate this many batches only")
    parser.add_argument("--output", help="also write the JSON here")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.steps is not None and args.steps < 1):
        raise UsageError(f"--batch-size and --steps must be positive, got {args.batch_size} and {args.steps}")
    pad_crop = args.test_time_augment == "pad-crop"
    if args.test_time_crops < 1 or (args.test_time_crops > 1 and not pad_crop):
        raise UsageError(f"--test-time-crops {args.test_time_crops}: give a positive number of crops, together "
                         "with --test-time-augment pad-crop")
    if pad_crop and args.ten_crop:
        raise UsageError("--ten-crop and --test-time-augment pad-crop are two different test-time augmentations; "
                         "choose one")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    import pipelines

    # Paths and names first: a typo is answered before TensorFlow loads.
    path = resolve_model_path(args.model)
    manifest = pipelines.read_manifest(args.data_dir)
    if args.split not in manifest["splits"]:
        raise UsageError(f"{args.data_dir} has no split '{args.split}' (it has "
                         f"{', '.join(sorted(manifest['splits']))}); choose one with --split")
    load_tensorflow(args.debug)
    import numpy as np

    model = load_model(path)
    crop = check_model_matches_data(model, manifest, path, args.data_dir)
    if args.ten_crop and crop is None:
        raise UsageError("--ten-crop needs a model whose input is smaller than the stored images (e.g. 96 of 100)")
    dataset = pipelines.make_dataset(
        args.data_dir, args.split, args.batch_size, training=False,
        crop_size=None if args.ten_crop else crop,
    )
    if args.steps:
        dataset = dataset.take(args.steps)
    correct1 = correct5 = total = 0
    for index, (images, labels) in enumerate(dataset):
        if pad_crop:
            from pipelines.augment import prediction_pad_crops

            crops = prediction_pad_crops(images, args.seed, index, args.test_time_crops)
            probabilities = np.mean([predict_probabilities(model, c.numpy()) for c in crops], axis=0)
        else:
            probabilities = predict_probabilities(model, images.numpy(), crop if args.ten_crop else None)
        labels = labels.numpy()
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
        total += len(labels)
    if total == 0:
        raise UsageError(f"split {args.split} of {args.data_dir} has no examples")
    result = {
        "model": path, "split": args.split, "num_examples": total,
        "crops": 10 if args.ten_crop else args.test_time_crops, "test_time_augment": args.test_time_augment,
        "top1_error": 1.0 - correct1 / total, "top5_error": 1.0 - correct5 / total,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        storage.write_text(args.output, text + "\n")
    return 0


def load_model(path):
    """`keras.saving.load_model` with this package's layers registered; an unreadable file is a UsageError."""
    import keras

    import gmsop_keras.layers  # noqa: F401  (registers the layer classes, which loading looks up)
    import gmsop_keras.optimizers  # noqa: F401  (and the coupled-decay optimizer of a compiled model)

    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise UsageError(f"{path}: not a readable Keras model of this package ({reason})") from None


def resolve_model_path(path):
    """A `.keras` file, or a model dir's best.keras, else its final.keras.

    In a model dir on a URL (no rename there, `gmsop_keras.run_state`) a model counts only with
    the file written after it: best.keras with best.json, final.keras with metrics.json.
    """
    if storage.isdir(path):
        markers = {"best.keras": "best.json", "final.keras": "metrics.json"}
        for name, marker in markers.items():
            if storage.isfile(storage.join(path, name)) and (
                    not storage.is_url(path) or storage.isfile(storage.join(path, marker))):
                return storage.join(path, name)
        raise UsageError(f"{path} holds neither a complete best.keras nor final.keras; train it to the end "
                         "of an epoch first, or pass a .keras file")
    if not storage.isfile(path):
        raise UsageError(f"model {path} not found")
    return path


def check_model_matches_data(model, manifest, model_path, data_dir):
    """The evaluation crop side for `model` on the dataset of `manifest` (None: whole images).

    A model fits a dataset when it has the manifest's number of classes and takes either the stored
    images or the crop that training takes from them (`pipelines.dataset.default_crop_size`:
    Places365's 96x96 of 100x100).

    Raises:
        UsageError: naming both shapes and the fix.
    """
    from pipelines.dataset import default_crop_size

    input_shape = tuple(model.input_shape[1:])
    num_classes = int(model.output_shape[-1])
    stored = tuple(manifest["image_shape"])
    crop = default_crop_size(manifest["dataset"])
    valid = [stored] + ([(crop, crop, stored[2])] if crop and crop < min(stored[:2]) else [])
    if num_classes == manifest["num_classes"] and input_shape in valid:
        return None if input_shape == stored else crop
    sizes = " or ".join("x".join(map(str, shape)) for shape in valid)
    raise UsageError(
        f"model {model_path} takes {'x'.join(map(str, input_shape))} images and predicts {num_classes} "
        f"classes, but {data_dir} holds {manifest['dataset']} images of {'x'.join(map(str, stored))} "
        f"({manifest['num_classes']} classes; a model for it takes {sizes} with {manifest['num_classes']} "
        "classes); evaluate the model on the dataset it was trained on (the data_dir of its config.yaml)")


def predict_probabilities(model, images, ten_crop_size=None):
    """Softmax of the model; with `ten_crop_size`, averaged over the ten standard crops."""
    import keras
    import numpy as np

    if ten_crop_size is None:
        crops = [images]
    else:
        h, w = images.shape[1:3]
        c = ten_crop_size
        corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
        crops = [images[:, y:y + c, x:x + c] for y, x in corners]
        crops += [crop[:, :, ::-1] for crop in crops]
    probabilities = [keras.ops.convert_to_numpy(keras.ops.softmax(model(c.astype("float32"), training=False))) for c in crops]
    return np.mean(probabilities, axis=0)


def console_main():
    """The `gmsop-evaluate` console script."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    console_main()
