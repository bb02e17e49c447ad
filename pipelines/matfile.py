"""ImageNet-64 from the GM-SOP authors' single `.mat` file (MATLAB v7.3 = HDF5, or v5).

The authors unpickled the Chrabaszcz batches, saved them with `scipy.io.savemat` and concatenated them
into one MatConvNet `imdb`. Accepted layouts (MATLAB axis order, as `load` would show them):

- variables: `imdb.images.{data,labels,set}`, `images.{data,labels,set}` (saved with `-struct`), or
  top-level `data`, `labels`, `set`;
- `data`: 64 x 64 x 3 x N (MatConvNet H x W x C x N; `layout="whcn"` if your file holds transposed
  images), N x 64 x 64 x 3, or flat N x 12288 / 12288 x N rows of R|G|B planes (the pickles' layout);
- `labels`: N values 1..1000; `set`: 1 = train, 2 = validation (3 = validation if there is no 2).

v7.3 files are read lazily with h5py, which shows every array with its axes reversed (HDF5 is
row-major, MATLAB column-major): `_Var` undoes that, so the same code handles both versions.
v5 files are loaded whole by `scipy.io.loadmat` (the full set needs about 16 GB of RAM).
"""

import h5py
import numpy as np
import scipy.io

from pipelines.errors import DataError
from pipelines.imagenet64_format import FLAT_SIZE, IMAGE_SIZE, NUM_CLASSES, check_labels, flat_to_hwc
from pipelines.source import Examples, Source, Split

_PREFIXES = (("imdb", "images"), ("images",), ())
_HWC = (IMAGE_SIZE, IMAGE_SIZE, 3)


class _Var:
    """A MATLAB array in MATLAB axis order, read lazily (v7.3) or from memory (v5)."""

    def __init__(self, obj, hdf5):
        self.obj, self.hdf5 = obj, hdf5
        self.shape = tuple(obj.shape[::-1]) if hdf5 else tuple(np.shape(obj))

    def block(self, axis, start, stop):
        index = [slice(None)] * len(self.shape)
        if self.hdf5:
            index[len(self.shape) - 1 - axis] = slice(start, stop)
            return self.obj[tuple(index)].T
        index[axis] = slice(start, stop)
        return np.asarray(self.obj)[tuple(index)]

    def all(self):
        return self.obj[()].T if self.hdf5 else np.asarray(self.obj)


def mat_source(path, layout="hwcn", class_names=None):
    """ImageNet-64 `.mat` file as a `Source`; `layout` ("hwcn" or "whcn") applies to 4-D `data`."""
    if layout not in ("hwcn", "whcn"):
        raise ValueError(f"`layout` must be 'hwcn' or 'whcn'. Received: layout={layout!r}")
    root, hdf5 = _open(path)
    data, labels, sets = (_lookup(root, name, hdf5) for name in ("data", "labels", "set"))
    if data is None or labels is None:
        raise DataError(f"{path}: no imdb.images.data / labels (nor images.* or top-level data, labels)")
    n_axis, to_nhwc = _data_layout(data.shape, layout, path)
    num = data.shape[n_axis] if len(data.shape) in (2, 4) else 1
    labels = check_labels(_read(labels.all, path), path)
    if len(labels) != num:
        raise DataError(f"{path}: {len(labels)} labels for {num} images")
    if sets is None:
        raise DataError(f"{path}: no images.set array (1 = train, 2 = validation) to split the images")
    sets = _read(sets.all, path).reshape(-1)
    if len(sets) != num:
        raise DataError(f"{path}: images.set has {len(sets)} entries for {num} images")
    unknown = set(np.unique(sets).tolist()) - {1, 2, 3}
    if unknown:
        raise DataError(f"{path}: images.set has values {sorted(unknown)}; expected 1 (train), "
                        "2 or 3 (validation)")
    val_code = 2 if np.any(sets == 2) else 3
    splits = {}
    for split, code in (("train", 1), ("validation", val_code)):
        indices = np.flatnonzero(sets == code)
        if indices.size:
            splits[split] = Split(num_examples=int(indices.size),
                                  read=_reader(data, indices, n_axis, to_nhwc, labels, path),
                                  inputs=lambda start, stop: [path])
    description = {"format": "mat-v7.3" if hdf5 else "mat-v5", "path": path, "layout": layout}
    return Source(dataset="imagenet64", image_shape=_HWC, num_classes=NUM_CLASSES, splits=splits,
                  class_names=class_names, description=description)


def _open(path):
    if h5py.is_hdf5(path):
        try:
            return h5py.File(path, "r"), True
        except OSError as e:
            raise DataError(f"{path}: truncated or corrupt MATLAB v7.3 (HDF5) file ({e})") from None
    try:
        return scipy.io.loadmat(path, simplify_cells=True), False
    except Exception as e:  # noqa: BLE001 (scipy raises many types for a damaged file)
        raise DataError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}); "
                        "it may be truncated, download it again") from None


def _lookup(root, name, hdf5):
    for prefix in _PREFIXES:
        node = root
        for key in prefix + (name,):
            try:
                node = node[key]
            except (KeyError, TypeError, ValueError, IndexError):
                node = None
                break
        if node is not None and (not hdf5 or isinstance(node, h5py.Dataset)):
            return _Var(node, hdf5)
    return None


def _data_layout(shape, layout, path):
    """(axis of N, function turning a block in MATLAB order into NHWC) for a `data` shape."""
    if len(shape) == 4 and shape[:3] == ((IMAGE_SIZE, IMAGE_SIZE, 3)):
        order = (3, 0, 1, 2) if layout == "hwcn" else (3, 1, 0, 2)
        return 3, lambda block: block.transpose(order)
    if len(shape) == 4 and shape[1:] == _HWC:
        return 0, lambda block: block if layout == "hwcn" else block.transpose(0, 2, 1, 3)
    if len(shape) == 3 and shape == _HWC:  # a single image (MATLAB drops the trailing 1)
        return 3, lambda block: block.reshape(_HWC + (1,)).transpose(3, 0, 1, 2)
    if len(shape) == 2 and shape[1] == FLAT_SIZE:
        return 0, flat_to_hwc
    if len(shape) == 2 and shape[0] == FLAT_SIZE:
        return 1, lambda block: flat_to_hwc(block.T)
    if len(shape) == 1 and shape[0] == FLAT_SIZE:
        return 0, lambda block: flat_to_hwc(block.reshape(1, FLAT_SIZE))
    raise DataError(f"{path}: images.data has shape {'x'.join(map(str, shape))}; expected 64x64x3xN, "
                    "Nx64x64x3, Nx12288 or 12288xN")


def _reader(data, indices, n_axis, to_nhwc, labels, path):
    def read(start, stop):
        wanted = indices[start:stop]
        first, last = int(wanted[0]), int(wanted[-1]) + 1
        if len(data.shape) in (2, 4):
            block = _read(lambda: data.block(n_axis, first, last), path)
            block = np.take(block, wanted - first, axis=n_axis)
        else:
            block = _read(data.all, path)
        images = np.ascontiguousarray(to_nhwc(block))
        if images.dtype != np.uint8:
            raise DataError(f"{path}: images.data is {images.dtype}; expected uint8")
        return Examples(images, labels[wanted] - 1)

    return read


def _read(function, path):
    try:
        return function()
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: cannot read array data ({e}); the file may be truncated") from None
