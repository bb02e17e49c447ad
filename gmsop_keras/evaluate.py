"""python -m gmsop_keras.evaluate: top-1 / top-5 error of a saved model on a dataset split.

    python -m gmsop_keras.evaluate runs/imagenet64-resnet18-gm-sop-16-8/best.keras \\
        --dataset imagenet64 --data-dir data/imagenet64 --split validation
    python -m gmsop_keras.evaluate MODEL --data-dir data/places365 --ten-crop
    python -m gmsop_keras.evaluate runs/synthetic-resnet18-gm-sop-16-8

Without `--data-dir` the model is evaluated on the dataset its run was trained on: the one named in
the `config.yaml` of its model dir (said in one line on stderr).

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

import numpy as np

import pipelines
from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.serving.paths import resolve_model_path, run_data_dir
from gmsop_keras.training.errors import UsageError
from pipelines import storage
from pipelines.augmentations import TEST_TIME_AUGMENTATIONS


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file, or a model dir (its best.keras, else final.keras)")
    parser.add_argument("--dataset", default=None, help="imagenet64 | places365 | synthetic (informational)")
    parser.add_argument("--data-dir", help="converted TFRecords (python -m pipelines.convert); default: the "
                                           "dataset named in the config.yaml of the model's run")
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
    # Paths and names first: a typo is answered before TensorFlow loads.
    path = resolve_model_path(args.model)
    if args.data_dir is None:
        args.data_dir = _run_data_dir(args.model, args.split)
    manifest = pipelines.read_manifest(args.data_dir)
    if args.split not in manifest["splits"]:
        raise UsageError(f"{args.data_dir} has no split '{args.split}' (it has "
                         f"{', '.join(sorted(manifest['splits']))}); choose one with --split")
    load_tensorflow(args.debug)
    # Deferred: loading a model imports TensorFlow, which loads only after the checks above.
    from gmsop_keras.serving.loading import (  # noqa: PLC0415
        check_model_matches_data, load_run_model, predict_probabilities, topk_correct)
    from pipelines.augment import prediction_pad_crops  # noqa: PLC0415

    model, path = load_run_model(args.model, path)
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
            crops = prediction_pad_crops(images, args.seed, index, args.test_time_crops)
            probabilities = np.mean([predict_probabilities(model, c.numpy()) for c in crops], axis=0)
        else:
            probabilities = predict_probabilities(model, images.numpy(), crop if args.ten_crop else None)
        labels = labels.numpy()
        batch1, batch5 = topk_correct(probabilities, labels)
        correct1 += batch1
        correct5 += batch5
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


def _run_data_dir(model, split):
    """The data dir named in the config.yaml of the run that `model` comes from, said on stderr."""
    found = run_data_dir(model)
    if found is None:
        raise UsageError(f"no --data-dir given and {model} is not in a run directory whose config.yaml names its "
                         "dataset; pass --data-dir with the dataset to evaluate on")
    data_dir, config = found
    if not storage.isdir(data_dir):
        raise UsageError(f"the dataset of {config}, {data_dir}, does not exist (moved or deleted); pass --data-dir "
                         "with the dataset to evaluate on")
    print(f"evaluating on {data_dir} ({split} split, from {config})", file=sys.stderr, flush=True)
    return data_dir


def console_main():
    """The `gmsop-evaluate` console script."""
    sys.exit(run_cli(main, output_flag="--output"))


if __name__ == "__main__":
    console_main()
