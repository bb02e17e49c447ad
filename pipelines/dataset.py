"""TFRecords -> `tf.data` input for training and evaluation: `make_dataset`.

Split like TF Model Garden's dataloaders into a decoder (serialized records -> uint8 images and int32
labels, batched: one `tf.io.parse_example` and one `decode_raw` per batch) and a parser (training
augmentation or evaluation centre crop, on whole batches).

Training: shard order reshuffled every epoch -> parallel interleave over shards -> shuffle buffer ->
batch -> decode + augment (parallel map) -> prefetch. Evaluation: shards in manifest order, records in
file order, every example exactly once, no randomness. The returned dataset carries
`auto_shard_policy = FILE`: under `MultiWorkerMirroredStrategy` (Keras `fit` distributes it) each
worker reads a disjoint subset of the shard files, which needs at least as many shards as workers
(`python -m pipelines.convert --min-shards`).
"""

import tensorflow as tf

from pipelines.augment import augment_batch, center_crop
from pipelines.augmentations import AUGMENTATIONS, DOUBLING_AUGMENTATIONS
from pipelines.errors import DataError
from pipelines.manifest import LABEL_OUT_OF_RANGE, shard_paths, verify_manifest
from pipelines.tfrecord import FEATURE_SPEC, IMAGE_KEY, LABEL_KEY

_AUTO_AUGMENT = {"places365": "crop_flip"}  # everything else: "flip" (the paper's ImageNet-64 recipe)
_AUTO_CROP = {"places365": 96}
_READ_BUFFER_BYTES = 8 << 20
_DECODE_SPEC = {key: FEATURE_SPEC[key] for key in (IMAGE_KEY, LABEL_KEY)}


def default_crop_size(dataset_name):
    """The crop side `make_dataset(crop_size="auto")` trains and evaluates with (Places365: 96), or None."""
    return _AUTO_CROP.get(dataset_name)


def make_dataset(data_dir, split, batch_size, training, *, shuffle_buffer=10_000, augment="auto",
                 crop_size="auto", padding=4, cache=False, seed=None, drop_remainder=None, repeat=False,
                 input_context=None):
    """Batches of (uint8 images [B, H, W, 3], int32 labels [B]) from a converted dataset folder.

    Args:
        data_dir: output folder of `python -m pipelines.convert` (with `manifest.json`).
        split: "train" or "validation" (any split in the manifest).
        batch_size: global batch size (a distribution strategy splits it across replicas).
        training: shuffle and augment (True), or read every example once in file order (False).
        shuffle_buffer: examples in the shuffle buffer (training only; 0 or 1 disables it).
        augment: "auto" (random 96x96 crop + flip for places365, flip for the others), "none",
            "flip", "crop_flip", "pad_crop_flip" or "chrabaszcz" (see `pipelines.augment`). Training
            only. "chrabaszcz" doubles the training set: every record enters the shuffle twice, once
            as itself and once marked for mirroring, so each pass over the records (an epoch)
            yields every image and its mirror image once each: 2 N examples
            (`pipelines.augmentations.epoch_examples`).
        crop_size: crop side (int) for the crop methods and the evaluation centre crop ("flip" and
            "none" centre-crop too, so training and evaluation shapes match); "auto" is 96 for
            places365 and None (whole image) for the others.
        padding: zero padding on each side for "pad_crop_flip".
        cache: keep the records in memory after the first epoch (the shard-order shuffle is then
            fixed; the shuffle buffer still reshuffles every epoch).
        seed: makes shuffling and augmentation reproducible (None: different every run).
        drop_remainder: drop a last partial batch; default `training`.
        repeat: repeat indefinitely (then pass `steps_per_epoch` to `fit`).
        input_context: a `tf.distribute.InputContext`, when called from
            `strategy.distribute_datasets_from_function`: read only shard files
            `input_pipeline_id::num_input_pipelines` (sharding by file by hand); `batch_size` is then
            the per-replica size (`input_context.get_per_replica_batch_size`).

    Returns:
        A `tf.data.Dataset` with `auto_shard_policy = FILE`.

    Raises:
        DataError: no manifest, no such split, missing or mismatched shard files.
        ValueError: an invalid argument, named.
    """
    manifest = verify_manifest(data_dir, [split])
    files = shard_paths(data_dir, manifest, split)
    if input_context is not None:
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
        if not files:
            raise DataError(f"{data_dir}: split '{split}' has fewer shards than the "
                            f"{input_context.num_input_pipelines} input pipelines; convert it again with "
                            f"--min-shards {input_context.num_input_pipelines}")
    image_shape = tuple(manifest["image_shape"])
    num_classes = manifest["num_classes"]
    dataset_name = manifest["dataset"]
    if augment != "auto" and augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be 'auto' or one of {AUGMENTATIONS}. Received: augment={augment!r}")
    method = _AUTO_AUGMENT.get(dataset_name, "flip") if augment == "auto" else augment
    method = method if training else "none"  # evaluation never augments
    crop = _AUTO_CROP.get(dataset_name) if crop_size == "auto" else crop_size
    _validate(batch_size, method, crop, image_shape, padding)
    drop_remainder = training if drop_remainder is None else drop_remainder
    deterministic = not training or seed is not None

    doubled = method in DOUBLING_AUGMENTATIONS
    if training:
        ds = _read_training(files, shuffle_buffer, cache, seed, deterministic, doubled)
    else:
        ds = tf.data.TFRecordDataset(files, buffer_size=_READ_BUFFER_BYTES)
        ds = ds.cache() if cache else ds
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if method != "none":
        generator = (tf.random.Generator.from_seed(seed) if seed is not None
                     else tf.random.Generator.from_non_deterministic_state())
        # One seed per batch, drawn in order (sequential map) so the parallel map below stays deterministic.
        if doubled:
            ds = ds.map(lambda records, mirrored: (records, mirrored, generator.make_seeds(1)[:, 0]))

            def parse(records, mirrored, batch_seed):
                return _parse(records, image_shape, num_classes, method, batch_seed, crop, padding, mirrored)
        else:
            ds = ds.map(lambda records: (records, generator.make_seeds(1)[:, 0]))

            def parse(records, batch_seed):
                return _parse(records, image_shape, num_classes, method, batch_seed, crop, padding)
    else:
        def parse(records):
            return _parse(records, image_shape, num_classes, "none", None, crop, padding)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    options.deterministic = deterministic
    return ds.with_options(options)


def decode_records(serialized, image_shape):
    """Decoder: a batch of serialized Examples -> (uint8 images [B, H, W, 3], int32 labels [B])."""
    features = tf.io.parse_example(serialized, _DECODE_SPEC)
    batch = serialized.shape[0] if serialized.shape[0] is not None else -1  # keep a static batch size
    images = tf.reshape(tf.io.decode_raw(features[IMAGE_KEY], tf.uint8), (batch,) + tuple(image_shape))
    return images, tf.cast(features[LABEL_KEY], tf.int32)


def _parse(serialized, image_shape, num_classes, method, seed, crop, padding, mirrored=None):
    """Parser: decode, check the labels against the manifest's `num_classes` (`input_error` names
    the failure), then augment (training) or centre-crop (no augmentation, when `crop` is set)."""
    images, labels = decode_records(serialized, image_shape)
    in_range = tf.reduce_all((labels >= 0) & (labels < num_classes))
    with tf.control_dependencies([tf.debugging.Assert(in_range, [LABEL_OUT_OF_RANGE, tf.reduce_max(labels)])]):
        labels = tf.identity(labels)
    if method == "none":
        images = center_crop(images, crop) if crop else images
    else:
        images = augment_batch(images, method, seed, crop_size=crop, padding=padding, mirrored=mirrored)
    return images, labels


def _read_training(files, shuffle_buffer, cache, seed, deterministic, doubled=False):
    names = tf.data.Dataset.from_tensor_slices(files)
    if not cache:  # with a cache the first epoch's order would be frozen anyway
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = names.interleave(lambda name: tf.data.TFRecordDataset(name, buffer_size=_READ_BUFFER_BYTES),
                          cycle_length=min(len(files), 16), block_length=1,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache()
    if doubled:  # (record, False), (record, True): the copy marked True is mirrored after decoding
        ds = ds.map(lambda record: (tf.stack([record, record]), tf.constant([False, True]))).unbatch()
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds


def _validate(batch_size, method, crop, image_shape, padding):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    if method == "crop_flip" and not crop:
        raise ValueError("`augment='crop_flip'` needs a `crop_size`. Received: crop_size=None")
    if crop is not None and not (isinstance(crop, int) and 0 < crop <= min(image_shape[:2])):
        raise ValueError(f"`crop_size` must be an int in 1..{min(image_shape[:2])} for images of shape "
                         f"{list(image_shape)}. Received: crop_size={crop!r}")
    if method in ("pad_crop_flip", "chrabaszcz") and padding < 0:
        raise ValueError(f"`padding` must be >= 0. Received: padding={padding}")
