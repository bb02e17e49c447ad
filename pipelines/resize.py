"""Antialiased bicubic downsizing with MATLAB `imresize` semantics, vectorised over a batch.

MATLAB's `imresize(im, [h w])` (default method 'bicubic', 'Antialiasing' true when shrinking), which
the GM-SOP authors used to make Places365 100x100, does per dimension:

- the cubic convolution kernel with a = -0.5 (Keys), stretched by 1/scale when shrinking (scale < 1),
  so each output pixel averages about 4/scale input pixels (antialiasing);
- output pixel centre x maps to input u = x / scale + 0.5 (1 - 1/scale) (1-based pixel centres);
- taps outside the image are mirrored (symmetric padding) and weights normalised to sum to 1;
- the dimension that shrinks most first (rows first on a tie), each pass rounded back to uint8
  (MATLAB keeps the input class between passes; rounding is half away from zero, saturating).

`resize_images` does exactly that, in float64, as two matrix products per batch (a few ms per 256x256
image on one core; PIL takes about 0.5 ms). Other resizers use the same a = -0.5 kernel with
antialiasing but differ in the details: PIL's BICUBIC truncates the kernel at the border and
renormalises instead of mirroring, and rounds once at the end; `tf.image.resize(..., "bicubic",
antialias=True)` (ScaleAndTranslate, Keys kernel) likewise, in float. On 256 -> 100 textures both stay
within 1 level of this in the interior (mean difference 0.1 to 0.2) and 2 levels at the border.
"""

import functools

import numpy as np


def _cubic(x):
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=32)
def resize_matrix(in_length, out_length):
    """Dense [out_length, in_length] float64 weights of MATLAB's bicubic imresize along one dimension."""
    scale = out_length / in_length
    kernel_width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        kernel_width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(np.ceil(kernel_width)) + 2
    indices = left + np.arange(taps)[None, :]
    weights = kernel(u - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), taps), indices.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def resize_images(images, size):
    """Resizes uint8 images [N, H, W, C] to [N, size[0], size[1], C] like MATLAB `imresize`, bicubic."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 [N, H, W, C]. Received: {images.dtype} {images.shape}")
    out_h, out_w = size
    n, in_h, in_w, channels = images.shape
    if (in_h, in_w) == (out_h, out_w):
        return images
    scale_h, scale_w = out_h / in_h, out_w / in_w
    # Each pass is one [out, in] x [in, everything else] matrix product (BLAS), on a copy of the batch
    # with the resized axis first.
    result = images.transpose(1, 2, 0, 3)                                       # [H, W, N, C]
    if scale_h <= scale_w:  # smaller scale first, rows on a tie
        result = _resize_first_axis(result, out_h).transpose(1, 0, 2, 3)        # [W, h, N, C]
        result = _resize_first_axis(result, out_w).transpose(2, 1, 0, 3)        # [N, h, w, C]
    else:
        result = _resize_first_axis(result.transpose(1, 0, 2, 3), out_w)        # [w, H, N, C]
        result = _resize_first_axis(result.transpose(1, 0, 2, 3), out_h).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(result)


def _resize_first_axis(array, out_length):
    in_length = array.shape[0]
    if in_length == out_length:
        return array
    flat = np.ascontiguousarray(array, dtype=np.float64).reshape(in_length, -1)
    resized = resize_matrix(in_length, out_length) @ flat
    return _to_uint8(resized).reshape((out_length,) + array.shape[1:])


def _to_uint8(values):
    """MATLAB's double -> uint8: saturate, round half away from zero."""
    return np.floor(np.clip(values, 0, 255) + 0.5).astype(np.uint8)
