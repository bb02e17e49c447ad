"""python -m gmsop_keras.convert_torch: the authors' PyTorch checkpoint -> a Keras model.

    python -m gmsop_keras.convert_torch resnet50-19c8e357.pth --model resnet50-imagenet --output resnet50.keras
    python -m gmsop_keras.convert_torch mpncovresnet50.pth --model resnet50-imagenet --head isqrt-256 \\
        --output isqrt_cov.keras --saved-model saved_models/isqrt_cov
    python -m gmsop_keras.convert_torch checkpoint.pth.tar --model gsop2-resnet50 --output gsop2.keras

Reads a PyTorch `state_dict` (plain, or wrapped as `{'state_dict': ...}`, with or without the
`module.` prefixes of DataParallel), maps every tensor to the model's weights by name
(`gmsop_keras.weights.torch_resnets`), and refuses a checkpoint with missing, unexpected or
mis-shaped tensors, listing them. The `.keras` model takes raw RGB images in [0, 255] (input
`image`) and normalises them with torchvision's ImageNet mean and standard deviation, as the
authors' training did; `--saved-model` also exports it for TF Serving (`gmsop_keras.export`).
Reading `.pth` files needs PyTorch (`pip install torch==2.13.0`, or any `pip install torch`).
"""

import argparse
import sys

from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.models.names import IMAGENET_BACKBONES, parse_head
from gmsop_keras.training.errors import UsageError
from gmsop_keras.weights.torch_checkpoint import read_checkpoint
from pipelines import storage

def build_parser():
    # names are checked by the model builder: importing it here would start TensorFlow before
    # the arguments and the checkpoint are checked
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.convert_torch", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a PyTorch checkpoint (.pth, .pth.tar) holding a state_dict")
    parser.add_argument("--model", required=True,
                        help="the model it was trained as: resnet50-imagenet (torchvision's ResNet-50, or "
                             "iSQRT-COV with --head isqrt-256), gsop1-resnet50, gsop2-resnet50, "
                             "gauss-resnet50, resnet50-3g")
    parser.add_argument("--head", help="the model's head, gap | isqrt-256 | 3g-256 (default: the model's own)")
    parser.add_argument("--output", required=True, help="the .keras file to write")
    parser.add_argument("--input-size", type=int, default=224, help="side of the square input images (default 224)")
    parser.add_argument("--saved-model", help="also export a SavedModel into this model folder (a numbered version)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="torch.load with weights_only=False (only for a checkpoint you trust)")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".keras"):
        raise UsageError(f"--output must end in .keras, got {args.output}")
    if args.input_size < 32:
        raise UsageError(f"--input-size must be at least 32, got {args.input_size}")
    if args.model not in IMAGENET_BACKBONES:  # before torch and TensorFlow load
        raise UsageError(f"Unknown model: {args.model!r}. Valid models: {', '.join(IMAGENET_BACKBONES)}.")
    if args.head is not None:
        try:
            parse_head(args.head)
        except ValueError as error:
            raise UsageError(str(error)) from None
    state_dict = read_checkpoint(args.checkpoint, weights_only=not args.unsafe_load)
    load_tensorflow(args.debug)
    # Deferred: the converter and the exporter import TensorFlow, which loads only after the checks above.
    from gmsop_keras.serving.export import export_model  # noqa: PLC0415
    from gmsop_keras.weights.torch_resnets import convert_state_dict  # noqa: PLC0415

    size = args.input_size
    try:
        model = convert_state_dict(state_dict, args.model, head=args.head, input_shape=(size, size, 3),
                                   raw_images=True)
    except ValueError as error:  # CheckpointMismatchError: what is missing, unexpected, mis-shaped
        raise UsageError(str(error)) from None
    storage.makedirs(storage.dirname(args.output))
    # Local: written aside and renamed, so a .keras file that exists is complete; a URL is one
    # object write (Keras zips in memory): whole or absent.
    with storage.written_aside(args.output, suffix=".keras") as temp:
        model.save(temp)
    print(args.output)
    if args.saved_model:
        print(export_model(model, args.saved_model))
    return 0


def console_main():
    """The `gmsop-convert-torch` console script."""
    sys.exit(run_cli(main, output_flag="--output"))


if __name__ == "__main__":
    console_main()
