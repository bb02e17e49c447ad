"""Real image sets that need no download, written as class-per-subfolder PNG trees.

    python benchmarks/real_sets.py digits --output runs/real/digits
    python -m pipelines.convert folder --source runs/real/digits --output runs/real/digits16 \
        --size 16 --validation-fraction 0.5 --seed 0

`digits`: scikit-learn's copy of the UCI handwritten digits (1,797 scans of 43 writers, 8x8
pixels of 17 grey levels, 10 classes, about 180 per class), the only real image set that ships
inside the installed packages (scikit-learn is in requirements.txt). Each scan is written as an
8x8 RGB PNG (grey levels 0-16 scaled to 0-255, the same value in each channel) named by its
index in the set, so the tree is the same on every machine; the conversion upsamples and
holds out the validation split.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

SETS = ("digits",)


def write_digits(output):
    """Writes `output/<digit>/<index>.png` for every scan; returns the number of images written."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 (only this set needs scikit-learn)

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for label in range(10):
        os.makedirs(os.path.join(output, str(label)), exist_ok=True)
    for index, (image, label) in enumerate(zip(images, digits.target)):
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        Image.fromarray(rgb).save(os.path.join(output, str(label), f"{index:04d}.png"))
    return len(images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=SETS)
    parser.add_argument("--output", required=True, help="folder to write <class>/<image>.png into")
    args = parser.parse_args(argv)
    if os.path.isdir(args.output) and os.listdir(args.output):
        print(f"error: {args.output} is not empty; give a new --output folder", file=sys.stderr)
        return 2
    count = write_digits(args.output)
    print(f"wrote {count} images of 10 classes to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
