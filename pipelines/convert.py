"""Convert a dataset into sharded TFRecords: `python -m pipelines.convert DATASET --output DIR [options]`.

    python -m pipelines.convert imagenet64 --source ~/data/Imagenet64 --output data/imagenet64
    python -m pipelines.convert imagenet64 --source ~/data/imdb.mat --output data/imagenet64
    python -m pipelines.convert imagenet64 --tfds-data-dir ~/tensorflow_datasets --output data/imagenet64
    python -m pipelines.convert places365 --source ~/data/places365 --output data/places365
    python -m pipelines.convert folder --source ~/photos --size 64 --output data/photos
    python -m pipelines.convert synthetic --output data/synthetic

Writes `train-00000-of-000NN.tfrecord`, `validation-...` (about `--shard-size-mb` each) and, last,
`manifest.json`. Re-running an interrupted conversion resumes it, unless a source file changed in
between (then it is refused, naming the file). A finished one is only replaced with `--overwrite`,
and stays whole until its replacement is complete (`pipelines.writer` describes the protocol).
Problems with the input end the run with `error: <file>: <what is wrong>` on stderr and exit status
2 (no `manifest.json` is written, an old one is kept); so does a full disk or a read-only output
(`error: cannot write <file>: No space left on device; ...`), leaving no partial shard behind. A source without a validation split is
converted with a note saying so.

ImageNet-64's release comes as two downloads, `Imagenet64_train` and `Imagenet64_val`: pass both
folders (`--source` twice), or one folder holding both.
"""

import argparse
import os
import sys
import traceback

from pipelines.errors import DataError
from pipelines.manifest import has_manifest
from pipelines.write_aside import write_failure


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", required=True, help="output folder for the shards and manifest.json")
    common.add_argument("--shard-size-mb", type=float, default=100.0, help="target shard size (default 100)")
    common.add_argument("--min-shards", type=int, default=4,
                        help="at least this many shards per split, for interleaving and multi-worker "
                             "sharding by file (default 4)")
    common.add_argument("--workers", type=int, default=None, help="parallel shard writers (default: CPUs)")
    common.add_argument("--overwrite", action="store_true",
                        help="replace a finished output (kept until the new one is complete); start an "
                             "unfinished one again when its settings or source files changed")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--seed", type=int, default=0, help="seed for shuffling image lists / synthetic data")
    common.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback; show TensorFlow's start-up log")
    parser = argparse.ArgumentParser(prog="python -m pipelines.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET",
                                help="imagenet64 | places365 | folder | synthetic")
    imagenet = sub.add_parser("imagenet64", parents=[common], help="downsampled ImageNet-1K 64x64")
    imagenet.add_argument("--source", action="append",
                          help="release folder (train_data_batch_*, val_data; pickled or .npz; give "
                               "--source twice for the Imagenet64_train and Imagenet64_val folders) "
                               "or the GM-SOP .mat file")
    imagenet.add_argument("--tfds-data-dir", help="local TFDS data dir with imagenet_resized/64x64 prepared")
    imagenet.add_argument("--mat-layout", choices=("hwcn", "whcn"), default="hwcn",
                          help="axis order of a 4-D .mat images.data (default hwcn, MatConvNet's)")
    places = sub.add_parser("places365", parents=[common], help="Places365-Standard resized to 100x100")
    places.add_argument("--source", help="official release folder (lists + data_256/, val_256/) or "
                                         "train/ val/ class folders")
    places.add_argument("--tfds-data-dir", help="local TFDS data dir with places365_small prepared")
    places.add_argument("--size", type=int, default=100, help="output side (default 100)")
    places.add_argument("--skip-bad", action="store_true", help="skip unreadable images and report them")
    folder = sub.add_parser("folder", parents=[common], help="any class-per-subfolder image tree")
    folder.add_argument("--source", required=True, help="ROOT/<class>/<images> (or ROOT/train, ROOT/val)")
    folder.add_argument("--size", required=True, type=_size, help="output size: 64 or HxW, e.g. 64x80")
    folder.add_argument("--validation-fraction", type=float, default=0.0,
                        help="hold out this fraction of each class when there is no val/ folder")
    folder.add_argument("--skip-bad", action="store_true", help="skip unreadable images and report them")
    synthetic = sub.add_parser("synthetic", parents=[common], help="built-in synthetic set (no download)")
    synthetic.add_argument("--num-classes", type=int, default=10)
    synthetic.add_argument("--train-per-class", type=int, default=500)
    synthetic.add_argument("--val-per-class", type=int, default=100)
    synthetic.add_argument("--image-size", type=int, default=64)
    return parser


def make_source(args):
    """The `Source` the arguments describe (imports only what that source needs)."""
    if args.dataset == "imagenet64":
        from pipelines.imagenet64 import imagenet64_source  # noqa: PLC0415

        return imagenet64_source(args.source, args.tfds_data_dir, mat_layout=args.mat_layout)
    if args.dataset == "places365":
        from pipelines.places365 import places365_source  # noqa: PLC0415

        return places365_source(args.source, args.tfds_data_dir, size=args.size, skip_bad=args.skip_bad,
                                seed=args.seed)
    if args.dataset == "folder":
        from pipelines.folder import folder_source  # noqa: PLC0415

        return folder_source(args.source, args.size, args.validation_fraction, args.skip_bad, args.seed)
    from pipelines.synthetic import synthetic_source  # noqa: PLC0415

    return synthetic_source(args.num_classes, args.train_per_class, args.val_per_class, args.image_size,
                            args.seed)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's start-up messages would bury a one-line error; the conversion does no TF math.
    # (Set TF_CPP_MIN_LOG_LEVEL=0 to see them.)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.debug else "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        if has_manifest(args.output) and not args.overwrite:  # before scanning a large source
            raise DataError(f"{args.output}: already holds a finished dataset (manifest.json); "
                            "pass --overwrite to replace it")
        try:
            source = make_source(args)
        except ValueError as e:  # an invalid option value, named by the source
            parser.error(str(e))
        _hide_gpus()
        from pipelines.writer import write_dataset  # noqa: PLC0415 (imports TensorFlow)

        manifest = write_dataset(source, args.output, shard_size_mb=args.shard_size_mb,
                                 min_shards=args.min_shards, workers=args.workers, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    except DataError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: the finished shards are kept
        message = write_failure(e, "--output")
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"error: {message}; finished shards are kept, run the same command again to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    _report(args.output, manifest)
    if "validation" not in manifest["splits"]:
        print(f"note: {_where(args)}: no validation split found, so {args.output} has a train split only; "
              f"{_VALIDATION_HINTS[args.dataset]}, then convert again with --overwrite", file=sys.stderr)
    return 0


_VALIDATION_HINTS = {
    "imagenet64": "add the folder with val_data (the Imagenet64_val download): --source TRAIN_DIR --source VAL_DIR",
    "places365": "add places365_val.txt and val_256/ (or a val/ class tree) under --source",
    "folder": "add ROOT/train and ROOT/val class folders, or hold out images with --validation-fraction",
    "synthetic": "pass --val-per-class",
}


def _where(args):
    source = getattr(args, "source", None)
    if isinstance(source, list):
        source = " + ".join(source)
    return source or getattr(args, "tfds_data_dir", None) or args.dataset


def _hide_gpus():
    """Conversion needs no GPU: do not take the memory of a training job running on the same machine."""
    from pipelines.startup import load_tensorflow  # noqa: PLC0415

    tf = load_tensorflow()
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised (by a TFDS source): nothing to do
        pass


def _size(text):
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, got {text!r}")
    return (values[0], values[-1])


def _report(output, manifest):
    height, width, channels = manifest["image_shape"]
    splits = ", ".join(f"{name} {entry['num_examples']} examples in {len(entry['shards'])} shards"
                       for name, entry in manifest["splits"].items())
    print(f"wrote {output}: {manifest['dataset']} {height}x{width}x{channels}, "
          f"{manifest['num_classes']} classes; {splits}")
    skipped = manifest.get("skipped") or []
    if skipped:
        print(f"skipped {len(skipped)} unreadable files (all listed under 'skipped' in manifest.json):",
              file=sys.stderr)
        for line in skipped[:10]:
            print(f"  {line}", file=sys.stderr)


def console_main():
    """The `gmsop-convert` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
