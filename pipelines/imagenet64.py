"""Downsampled ImageNet-1K 64x64 (Chrabaszcz et al. 2017) from any of the forms it is shipped in.

- The original release: pickled dicts `train_data_batch_1` .. `train_data_batch_10` and `val_data`
  (or the `.npz` variant with the same names plus `.npz`) anywhere under `--source`; each holds `data`,
  uint8 [N, 12288] with each row the R plane, then the G plane, then the B plane of a 64x64 image
  (row-major), and `labels`, 1..1000.
- The GM-SOP authors' single `.mat` file (`pipelines.matfile`).
- A prepared TFDS `imagenet_resized/64x64` in a local data dir (`pipelines.tfds_source`).

Stored: HWC images and labels 0..999 (label - 1), the same as TFDS' `imagenet_resized`, whose class
order (WordNet ids, `map_clsloc.txt` order) gives the class names.
"""

import importlib.util
import os
import pickle
import re
import zipfile

import numpy as np

from pipelines.errors import DataError
from pipelines.imagenet64_format import FLAT_SIZE, IMAGE_SIZE, NUM_CLASSES, check_labels, flat_to_hwc
from pipelines.matfile import mat_source
from pipelines.source import ChunkCache, Examples, Source, Split, chunk_of

_BATCH_FILE = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")
_PICKLE_GLOBALS = {  # what pickled numpy arrays and lists may refer to; anything else is refused
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


def imagenet64_source(source=None, tfds_data_dir=None, mat_layout="hwcn"):
    """ImageNet-64 as a `Source`, from release folders, a `.mat` file, or a TFDS data dir.

    `source` is a path or a list of them: the release's two downloads (`Imagenet64_train`,
    `Imagenet64_val`) may be two folders, or one folder may hold both.
    """
    if tfds_data_dir:
        from pipelines.tfds_source import tfds_source  # noqa: PLC0415 (imports tensorflow_datasets)

        return tfds_source("imagenet_resized/64x64", tfds_data_dir, dataset="imagenet64")
    sources = [source] if isinstance(source, str) else list(source or [])
    if not sources:
        raise DataError("imagenet64 needs --source (release folder or .mat file) or --tfds-data-dir")
    for path in sources:
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
    if len(sources) > 1:
        files = [path for path in sources if os.path.isfile(path)]
        if files:
            raise DataError(f"{files[0]}: a .mat file holds both splits; pass it as the only --source")
        return _release_source(sources)
    source = sources[0]
    if os.path.isfile(source):
        if not source.lower().endswith(".mat"):
            raise DataError(f"{source}: expected a folder with train_data_batch_* / val_data, or a .mat file")
        class_names = imagenet_class_names(os.path.dirname(source))
        return mat_source(source, layout=mat_layout, class_names=class_names)
    return _release_source(source)


def imagenet_class_names(folder=None):
    """WordNet ids in label order: `map_clsloc.txt` under `folder` if there is one, else TFDS' list."""
    for root, _, files in os.walk(folder) if folder else ():
        if "map_clsloc.txt" in files:
            return _read_map_clsloc(os.path.join(root, "map_clsloc.txt"))
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "image_classification",
                            "imagenet_resized_labels.txt")
        if os.path.isfile(path):
            with open(path) as f:
                names = f.read().split()
            return names if len(names) == NUM_CLASSES else None
    return None


def load_batch_file(path):
    """One release file -> (data uint8 [N, 12288], labels int64 1..1000), checked."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                record = {key: npz[key] for key in npz.files}
        else:
            with open(path, "rb") as f:
                unpickler = _SafeUnpickler(f, encoding="latin1")
                unpickler.path = path
                record = unpickler.load()
    except DataError:
        raise
    except (EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError, MemoryError) as e:
        raise DataError(f"{path}: truncated or corrupt file ({type(e).__name__}: {e}); "
                        "download it again") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a dict with 'data' and 'labels'; found {type(record).__name__}")
    record = {k.decode() if isinstance(k, bytes) else k: v for k, v in record.items()}
    if "data" not in record or "labels" not in record:
        raise DataError(f"{path}: expected keys 'data' and 'labels'; found {sorted(record)}")
    data = np.asarray(record["data"])
    if data.ndim != 2 or data.shape[1] != FLAT_SIZE:
        raise DataError(f"{path}: 'data' has shape {data.shape}; expected [N, {FLAT_SIZE}] "
                        "(64x64 images as R|G|B planes)")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' is {data.dtype}; expected uint8")
    labels = check_labels(record["labels"], path)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    return data, labels


def _release_source(folders):
    folders = [folders] if isinstance(folders, str) else folders
    files = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                match = _BATCH_FILE.match(name)
                if match:
                    key = match.group(1)
                    if key not in files or name.endswith(".npz"):  # prefer .npz when both forms are there
                        files[key] = os.path.join(root, name)
    if not files:
        raise DataError(f"{' and '.join(folders)}: no train_data_batch_N or val_data files (pickled or .npz) "
                        "found")
    train = sorted((k for k in files if k != "val_data"), key=lambda k: int(k.rsplit("_", 1)[1]))
    splits = {}
    for split, keys in (("train", train), ("validation", ["val_data"] if "val_data" in files else [])):
        if keys:
            splits[split] = _split_from_files([files[k] for k in keys])
    paths = [os.path.abspath(folder) for folder in folders]
    description = {"format": "chrabaszcz-npz" if any(p.endswith(".npz") for p in files.values()) else
                   "chrabaszcz-pickle", "path": paths[0] if len(paths) == 1 else paths,
                   "files": sorted(files.values())}
    class_names = next((names for names in map(imagenet_class_names, folders) if names), None)
    return Source(dataset="imagenet64", image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=NUM_CLASSES,
                  splits=splits, class_names=class_names, description=description)


def _split_from_files(paths):
    """A chunked split: one chunk per file; each file is read (and checked) once up front to count it."""
    sizes = tuple(_count(path) for path in paths)
    cache = ChunkCache()

    def read(start, stop):
        index, offset = chunk_of(sizes, start, stop)
        data, labels = cache.get(index, lambda: load_batch_file(paths[index]))
        rows = slice(start - offset, stop - offset)
        return Examples(flat_to_hwc(data[rows]), labels[rows] - 1)

    def inputs(start, stop):
        return [paths[chunk_of(sizes, start, stop)[0]]]

    return Split(num_examples=sum(sizes), read=read, chunks=sizes, inputs=inputs)


def _count(path):
    if path.endswith(".npz"):  # labels and the header of data only: no need to read 1.6 GB to count
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "labels" in npz.files and "data" in npz.files:
                    labels = check_labels(npz["labels"], path)
                    with npz.zip.open("data.npy") as f:
                        major, _ = np.lib.format.read_magic(f)
                        read_header = (np.lib.format.read_array_header_1_0 if major == 1 else
                                       np.lib.format.read_array_header_2_0)
                        shape, _, dtype = read_header(f)
                    if shape != (len(labels), FLAT_SIZE) or dtype != np.uint8:
                        raise DataError(f"{path}: 'data' is {dtype} {shape}; expected uint8 [{len(labels)}, "
                                        f"{FLAT_SIZE}] (64x64 images as R|G|B planes, one per label)")
                    return len(labels)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise DataError(f"{path}: truncated or corrupt file ({type(e).__name__}: {e}); "
                            "download it again") from None
    return len(load_batch_file(path)[1])


def _read_map_clsloc(path):
    names = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                names[int(parts[1])] = parts[0]
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise DataError(f"{path}: expected lines 'wnid index name' for indices 1..{NUM_CLASSES}")
    return [names[i] for i in range(1, NUM_CLASSES + 1)]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a release file cannot run code on load."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise DataError(f"{getattr(self, 'path', 'pickle')}: refers to {module}.{name}; only numpy "
                            "arrays, lists and dicts are accepted in a downsampled-ImageNet batch file")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)
