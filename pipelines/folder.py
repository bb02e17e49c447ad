"""Image files as a `Source`: any class-per-subfolder tree (`folder`), and the lists `places365` uses.

A tree is `ROOT/<class>/**/<image>`; if ROOT has `train/` and `val/` (or `validation/`) folders of
class folders, those are the splits, else everything is `train` and `validation_fraction` of each class
(chosen by the seed) is held out. Classes are the sorted folder names of the training split; a
training class folder without images is refused, naming it (a class nothing teaches).

Images are decoded with PIL, converted to RGB (grey, palette, CMYK, alpha and 16-bit images included) and
resized to the requested size with `pipelines.resize.resize_images` (MATLAB bicubic imresize). A file
that cannot be decoded stops the conversion with its name, or is skipped and reported with
`skip_bad=True`. The training split is shuffled once (seeded) so that every shard mixes all classes.
"""

import os

import numpy as np
from PIL import Image

from pipelines.errors import DataError
from pipelines.resize import resize_images
from pipelines.source import Examples, Source, Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
_VALIDATION_NAMES = ("val", "validation")


def folder_source(root, size, validation_fraction=0.0, skip_bad=False, seed=0):
    """A class-per-subfolder image tree as a `Source` with images resized to `size` (H, W)."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError("`validation_fraction` must be in [0, 1). "
                         f"Received: validation_fraction={validation_fraction}")
    val_dir = next((os.path.join(root, name) for name in _VALIDATION_NAMES
                    if os.path.isdir(os.path.join(root, name))), None)
    if os.path.isdir(os.path.join(root, "train")) and val_dir:
        class_names, train = list_class_tree(os.path.join(root, "train"))
        _, validation = list_class_tree(val_dir, class_names)
    else:
        class_names, items = list_class_tree(root)
        train, validation = _hold_out(items, validation_fraction, seed)
    splits = {"train": train, "validation": validation} if validation else {"train": train}
    description = {"format": "image-folders", "path": os.path.abspath(root), "size": list(size),
                   "validation_fraction": validation_fraction, "seed": seed}
    return image_list_source("folder", splits, class_names, size, skip_bad, description, seed)


def list_class_tree(root, class_names=None):
    """(class names, [(path, label)]) of `root/<class>/**/<image>`; `class_names` fixes the classes."""
    found = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class name>/<images>)")
    root_classes = class_names is None  # the training tree: every class needs images
    if root_classes:
        class_names = found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DataError(f"{root}: class folders {unknown[:5]} are not among the training classes")
    items = []
    for label, name in enumerate(class_names):
        for directory, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            items += [(os.path.join(directory, f), label) for f in sorted(files)
                      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    if not items:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders")
    if root_classes:
        _refuse_empty_classes(root, class_names, items)
    return class_names, items


def _refuse_empty_classes(root, class_names, items):
    """A training class without images cannot be learned, and would shift every report's class count."""
    counts = np.bincount([label for _, label in items], minlength=len(class_names))
    empty = [os.path.join(root, class_names[label]) for label in np.flatnonzero(counts == 0)]
    if empty:
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise DataError(f"{', '.join(empty[:5])}{more}: class folder{'s' if len(empty) > 1 else ''} without "
                        f"image files ({', '.join(IMAGE_EXTENSIONS)}); add images or delete the folder")


def image_list_source(dataset, splits, class_names, size, skip_bad, description, seed=0):
    """`splits`: {name: [(path, label)]}; the `train` list is shuffled with `seed`."""
    splits = dict(splits)
    if "train" in splits:
        order = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(len(splits["train"]))
        splits["train"] = [splits["train"][i] for i in order]
    size = tuple(int(s) for s in size)
    return Source(dataset=dataset, image_shape=size + (3,), num_classes=len(class_names),
                  splits={name: Split(num_examples=len(items), read=_reader(items, size, skip_bad),
                                      inputs=_inputs(items))
                          for name, items in splits.items()},
                  class_names=list(class_names), description=description)


def load_image(path):
    """Decodes an image file to uint8 RGB [H, W, 3]; raises DataError naming the file."""
    try:
        with Image.open(path) as image:
            array = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        reason = str(e) or type(e).__name__
        raise DataError(f"{path}: unreadable image ({reason})") from None
    if array.ndim != 3 or min(array.shape[:2]) < 1:
        raise DataError(f"{path}: unreadable image (shape {array.shape})")
    return array


def _to_rgb(image):
    """uint8 RGB of a PIL image, 16-bit greyscale scaled to 8 bits.

    PIL opens a 16-bit greyscale PNG or TIFF as mode `I;16` (or `I`) and its `convert("RGB")` clips
    the values at 255, which turns the image white; such values are shifted down by 8 bits here,
    which is what PIL itself does when it opens a 16-bit RGB PNG (mode `RGB`, the high bytes), so
    the same picture stored as 16-bit grey or 16-bit colour gives the same 8-bit values.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _reader(items, size, skip_bad, batch=64):
    def read(start, stop):
        parts, labels, skipped, pending = [], [], [], []
        for path, label in items[start:stop]:
            try:
                pending.append(load_image(path))
                labels.append(label)
            except DataError as e:
                if not skip_bad:
                    raise DataError(f"{e}; fix or delete the file, or pass --skip-bad") from None
                skipped.append(str(e))
            if len(pending) == batch:  # resize as we go: a shard of 256x256 originals is large in float64
                parts.append(_resize_all(pending, size))
                pending = []
        parts.append(_resize_all(pending, size))
        return Examples(np.concatenate(parts), np.array(labels, np.int64), tuple(skipped))

    return read


def _inputs(items):
    return lambda start, stop: [path for path, _ in items[start:stop]]


def _resize_all(images, size):
    """Resizes a list of differently sized images, batching those of equal size."""
    out = np.empty((len(images),) + size + (3,), np.uint8)
    by_shape = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape[:2], []).append(i)
    for indices in by_shape.values():
        out[indices] = resize_images(np.stack([images[i] for i in indices]), size)
    return out


def _hold_out(items, fraction, seed):
    if fraction <= 0:
        return items, []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    labels = np.array([label for _, label in items])
    held = np.zeros(len(items), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        held[rng.permutation(members)[:int(round(fraction * len(members)))]] = True
    return [x for x, h in zip(items, held) if not h], [x for x, h in zip(items, held) if h]
