"""A prepared TensorFlow Datasets dataset in a local data dir as a `Source` (no download).

`imagenet_resized/64x64` is stored as is (its images are HWC and its labels already 0..999, made
from the same release files as `pipelines.imagenet64`); `places365_small` (256x256) is resized to
100x100 with `pipelines.resize.resize_images` (MATLAB imresize bicubic semantics).
"""

import os

import numpy as np

from pipelines.errors import DataError
from pipelines.resize import resize_images
from pipelines.source import Examples, Source, Split

_SPLITS = ("train", "validation")


def tfds_source(name, data_dir, dataset, image_size=None):
    """Reads the `train` and `validation` splits of the prepared TFDS dataset `name` in `data_dir`.

    Args:
        name: TFDS name with config, e.g. "imagenet_resized/64x64".
        data_dir: the local TFDS data dir (`--tfds-data-dir`); nothing is downloaded.
        dataset: manifest dataset name ("imagenet64", "places365").
        image_size: resize to (size, size) if the TFDS images have another size.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415 (slow import, only for this source)

    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: no such TFDS data dir")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits_info = dict(builder.info.splits)
    except Exception as e:  # noqa: BLE001 (TFDS raises many types for missing or damaged metadata)
        raise DataError(f"{data_dir}: cannot open TFDS dataset {name} ({type(e).__name__}: {e})") from None
    missing = [s for s in _SPLITS if s not in splits_info]
    if not splits_info or len(missing) == len(_SPLITS):
        raise DataError(f"{data_dir}: no prepared TFDS dataset {name} (looked for "
                        f"{os.path.join(data_dir, name)}/<version>/dataset_info.json); prepare it with "
                        f"`tfds build {name.split('/')[0]} --data_dir {data_dir}` first (this tool does "
                        "not download)")
    features = builder.info.features
    shape = tuple(features["image"].shape)
    size = (image_size, image_size) if image_size else shape[:2]
    if None in size:
        raise DataError(f"{data_dir}: {name} images have no fixed size; pass --size")
    label = features["label"]
    splits = {s: Split(num_examples=splits_info[s].num_examples,
                       read=_reader(builder, s, size, data_dir, name))
              for s in _SPLITS if s in splits_info}
    description = {"format": "tfds", "name": name, "version": str(builder.version),
                   "path": os.path.abspath(data_dir)}
    return Source(dataset=dataset, image_shape=size + (3,), num_classes=label.num_classes, splits=splits,
                  class_names=list(label.names), description=description)


def _reader(builder, split, size, data_dir, name):
    def read(start, stop):
        import tensorflow_datasets as tfds  # noqa: PLC0415

        try:
            ds = builder.as_dataset(split=f"{split}[{start}:{stop}]", shuffle_files=False)
            examples = list(tfds.as_numpy(ds))
        except Exception as e:  # noqa: BLE001 (corrupt TFDS shards surface as several TF error types)
            raise DataError(f"{data_dir}: cannot read {name} {split}[{start}:{stop}] "
                            f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        images = np.stack([_rgb(e["image"]) for e in examples])
        if images.shape[1:3] != size:
            images = resize_images(images, size)
        labels = np.array([e["label"] for e in examples], np.int64)
        return Examples(images, labels)

    return read


def _rgb(image):
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
