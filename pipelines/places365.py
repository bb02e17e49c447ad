"""Places365-Standard, downsampled to 100x100 as in the GM-SOP paper, from the official release or TFDS.

Accepted under `--source`:

- the official small-image release with its file lists: `places365_train_standard.txt`
  (`/a/airfield/00000001.jpg 0`) with images under `data_256/`, `places365_val.txt`
  (`Places365_val_00000001.jpg 165`) with images under `val_256/`, and `categories_places365.txt`
  (`/a/airfield 0`) for the class names; lists and image folders may sit anywhere under `--source`;
- the "easy format" tree `train/<class>/*.jpg`, `val/<class>/*.jpg` (any class-per-folder tree);
- or a prepared TFDS `places365_small` via `--tfds-data-dir`.

Images (256x256 or larger) are resized to 100x100 with MATLAB `imresize` bicubic semantics, what the
authors used (`pipelines.resize`). Training applies a random 96x96 crop and flip, evaluation a
centre crop (`pipelines.make_dataset`, `augment="auto"`).
"""

import os

from pipelines.errors import DataError
from pipelines.folder import folder_source, image_list_source

IMAGE_SIZE = 100
NUM_CLASSES = 365
_LISTS = {"train": "places365_train_standard.txt", "validation": "places365_val.txt"}
_IMAGE_DIRS = {"train": ("data_256", "train_256", "data_large", "train_large", ""),
               "validation": ("val_256", "val_large", "")}


def places365_source(source=None, tfds_data_dir=None, size=IMAGE_SIZE, skip_bad=False, seed=0):
    """Places365 as a `Source` with images of `size` x `size`."""
    if tfds_data_dir:
        from pipelines.tfds_source import tfds_source  # noqa: PLC0415 (imports tensorflow_datasets)

        return tfds_source("places365_small", tfds_data_dir, dataset="places365", image_size=size)
    if not source:
        raise DataError("places365 needs --source (the official image tree) or --tfds-data-dir")
    if not os.path.isdir(source):
        raise DataError(f"{source}: no such folder")
    found = _find_files(source, set(_LISTS.values()) | {"categories_places365.txt"})
    lists = {split: found[name] for split, name in _LISTS.items() if name in found}
    if not lists:  # no official lists: a class-per-folder tree
        result = folder_source(source, (size, size), skip_bad=skip_bad, seed=seed)
        result.dataset = "places365"
        return result
    class_names = _read_categories(found.get("categories_places365.txt"))
    splits = {split: _read_list(path, source, split, len(class_names) if class_names else NUM_CLASSES)
              for split, path in lists.items()}
    description = {"format": "places365-lists", "path": os.path.abspath(source), "size": size, "seed": seed,
                   "lists": sorted(lists.values())}
    return image_list_source("places365", splits, class_names or [str(i) for i in range(NUM_CLASSES)],
                             (size, size), skip_bad, description, seed)


def _find_files(root, names, max_depth=3):
    found = {}
    for directory, dirs, files in os.walk(root):
        depth = os.path.relpath(directory, root).count(os.sep)
        if depth >= max_depth or directory.rstrip(os.sep).endswith(("data_256", "val_256", "data_large")):
            dirs[:] = []  # do not walk the 1.8M images
        for name in names & set(files):
            found.setdefault(name, os.path.join(directory, name))
    return found


def _read_categories(path):
    if path is None:
        return None
    names = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{path}:{number}: expected '/a/airfield 0', found {line.strip()!r}")
            names[int(parts[1])] = parts[0][3:] if parts[0][2:3] == "/" else parts[0].lstrip("/")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1}, each once")
    return [names[i] for i in range(len(names))]


def _read_list(path, source, split, num_classes):
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{path}:{number}: expected 'image_path label', found {line.strip()!r}")
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise DataError(f"{path}:{number}: label {label} is out of range 0..{num_classes - 1}")
            entries.append((parts[0].lstrip("/"), label))
    if not entries:
        raise DataError(f"{path}: empty list")
    root = _image_root(source, split, entries[0][0], path)
    return [(os.path.join(root, relative), label) for relative, label in entries]


def _image_root(source, split, first, list_path):
    """The folder under which the list's paths exist (data_256/ for train, val_256/ for validation)."""
    bases = [source] + [os.path.join(source, d) for d in sorted(os.listdir(source))
                        if os.path.isdir(os.path.join(source, d))]
    for base in bases:
        for name in _IMAGE_DIRS[split]:
            candidate = os.path.join(base, name)
            if os.path.isfile(os.path.join(candidate, first)):
                return candidate
    folders = ",".join(d for d in _IMAGE_DIRS[split] if d)
    raise DataError(f"{list_path}: cannot find its first image {first} under {source}/{{{folders}}}; "
                    "extract the images next to the lists")
