"""Batched augmentation of uint8 images [B, H, W, 3], with stateless random ops.

Every function takes a `seed` of shape [2] (one per batch, drawn by `make_dataset`), so results are a
deterministic function of the seed and the batch; each example gets its own flip and crop offsets.
Pixel values are never changed: flips mirror exactly, crops are exact sub-windows, padding is zeros.

`"chrabaszcz"` is the augmentation of Chrabaszcz et al. (2017) that the GM-SOP paper's starred rows
of Table 3 use: the training set is doubled with the mirror image of every image (`make_dataset`
yields each image and its mirror once per epoch, so an epoch is twice as long), and every image is
zero-padded by 4 pixels and randomly cropped back to its size; `pad_crop` is the same crop for the
prediction stage (`python -m gmsop_keras.evaluate --test-time-augment pad-crop`). Their code
subtracts the mean image before padding, so its padding is the mean colour; here the raw uint8 image
is padded with zeros (the model normalises inside its graph).
"""

import tensorflow as tf

from pipelines.augmentations import AUGMENTATIONS, DOUBLING_AUGMENTATIONS  # noqa: F401  (re-exported)


def random_flip(images, seed):
    """Mirrors each image left-right with probability 1/2."""
    return mirror(images, tf.random.stateless_uniform(tf.shape(images)[:1], seed) < 0.5)


def mirror(images, where):
    """Mirrors left-right the images at which the bool vector `where` [B] is true."""
    # Partition and stitch rather than `tf.where(mask, reverse(images), images)`: a broadcast select on
    # uint8 runs at a fifth of the speed, and only the flipped half needs reversing.
    flip = tf.cast(where, tf.int32)
    kept, flipped = tf.dynamic_partition(images, flip, 2)
    kept_ids, flipped_ids = tf.dynamic_partition(tf.range(tf.shape(images)[0]), flip, 2)
    out = tf.dynamic_stitch([kept_ids, flipped_ids], [kept, tf.reverse(flipped, axis=[2])])
    return tf.ensure_shape(out, images.shape)


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def random_crop(images, size, seed):
    """A `size` (int or (h, w)) window at a uniformly random position in each image."""
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1:]
    crop_h, crop_w = _pair(size)
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top = tf.random.stateless_uniform([batch], seed_y, minval=0, maxval=height - crop_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seed_x, minval=0, maxval=width - crop_w + 1, dtype=tf.int32)
    # One slice per image (a loop of memcpy's) is twice as fast as gathering rows and 3-byte pixels.
    size = [crop_h, crop_w, channels]
    return tf.map_fn(lambda args: tf.slice(args[0], tf.stack([args[1], args[2], 0]), size),
                     (images, top, left), fn_output_signature=tf.TensorSpec(size, tf.uint8))


def center_crop(images, size):
    """The central `size` (int or (h, w)) window; odd margins put the extra pixel after the window."""
    crop_h, crop_w = _pair(size)
    top = (images.shape[1] - crop_h) // 2
    left = (images.shape[2] - crop_w) // 2
    return images[:, top:top + crop_h, left:left + crop_w, :]


def pad_crop(images, seed, size=None, padding=4):
    """Zero-pads each image by `padding` on every side, then crops a random `size` window (default:
    the image's own size), so the result is the image shifted by up to `padding` pixels each way."""
    size = size or (images.shape[1], images.shape[2])
    images = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    return random_crop(images, size, seed)


def prediction_pad_crops(images, seed, batch_index, crops=1, padding=4):
    """`crops` pad-crops of a batch for prediction (`evaluate --test-time-augment pad-crop`).

    Crop `c` of batch `batch_index` uses the stateless seed `[seed, batch_index * crops + c]`, so an
    evaluation is a deterministic function of `seed` and the batch order. Returns uint8 tensors
    of the input's shape.
    """
    return [pad_crop(images, tf.constant([seed, batch_index * crops + c], tf.int64), padding=padding)
            for c in range(crops)]


def augment_batch(images, method, seed, crop_size=None, padding=4, mirrored=None):
    """Applies one of `AUGMENTATIONS` to a batch.

    Args:
        images: uint8 [B, H, W, 3] with static H and W.
        method: "none"; "flip" (random mirror, after a centre crop to `crop_size` if one is set);
            "crop_flip" (random `crop_size` crop, then mirror);
            "pad_crop_flip" (zero-pad by `padding` on every side, random crop back to `crop_size`,
            or to H x W when `crop_size` is None, then a random mirror);
            "chrabaszcz" (mirror the images that `mirrored` marks, then pad and crop as
            "pad_crop_flip": the doubled training set of Chrabaszcz et al.).
        seed: int tensor [2].
        crop_size: crop size (int or (h, w)) for the crop methods.
        padding: pixels of zero padding for "pad_crop_flip" and "chrabaszcz".
        mirrored: bool [B], for "chrabaszcz": which images are the doubled set's mirror copies.
    """
    if method == "none":
        return images
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if method == "chrabaszcz":
        if mirrored is None:
            raise ValueError("`augment='chrabaszcz'` mirrors the copies of its doubled training set: pass "
                             "`mirrored` (make_dataset does). Received: mirrored=None")
        return pad_crop(mirror(images, mirrored), crop_seed, crop_size, padding)
    if method == "pad_crop_flip":
        images = pad_crop(images, crop_seed, crop_size, padding)
    elif method == "crop_flip":
        images = random_crop(images, crop_size, crop_seed)
    elif method != "flip":
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}. Received: augment={method!r}")
    elif crop_size:  # same output size as evaluation, which centre-crops
        images = center_crop(images, crop_size)
    return random_flip(images, flip_seed)
