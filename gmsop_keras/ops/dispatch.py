"""Mixture components computed for chosen (sample, component) pairs: stacked kernels or grouped rows.

A mixture's N components share one architecture and differ only in their kernels, stacked
`(N, C, h)` per 1x1 convolution (`GatedMixture.component_kernels`). A component is a `"sop"`
(1x1 convolutions with ReLU, then SR-SOP: `triu(sqrt(Sigma))`) or a `"gap"` (one 1x1
convolution with ReLU, then the mean over positions). Given each sample's top-K components,
`stacked_components` computes them with every pair's own copy of the kernels (the `"gather"`
dispatch; with all N kernels, the `"dense"` one), and `grouped_components` lays the pairs out
component by component so that one copy of a kernel serves a tile of rows (`"grouped"`). Both
give the same numbers, and gradients, for any routing.
"""

from keras import ops

from gmsop_keras.ops.pooling import square_root_sop
from gmsop_keras.ops.vectorize import triu_output_dim

# The grouped dispatch pads at most (B * K) / GROUP_PADDING_DIVISOR rows, in tiles of at most
# MAX_GROUP_TILE rows.
GROUP_PADDING_DIVISOR = 16
MAX_GROUP_TILE = 16


def component_output_dim(component, width):
    """Length of a component's output when its last 1x1 convolution has `width` channels."""
    return triu_output_dim(width) if component == "sop" else width


def stacked_components(positions, kernels, component="sop", num_iterations=5, sqrt_dtype=None):
    """Component outputs `(B, M, D)` for positions `(B, 1, L, C)` and kernels `(M, C, h)` or `(B, M, C, h)`.

    Args:
        positions: each sample's feature map as a position set, with a component axis of 1.
        kernels: the 1x1 convolutions' kernels, the same M for every sample (`(M, C, h)`: all
            components, the dense dispatch) or per sample (`(B, M, C, h)`: the gathered top-K).
        component: `"sop"` or `"gap"`.
        num_iterations: Newton-Schulz iterations of every square root.
        sqrt_dtype: dtype of the square roots' matrix products (default float32).
    """
    x = positions
    for kernel in kernels:
        x = ops.relu(ops.matmul(x, kernel))  # (B, M, L, h)
    if component == "gap":
        return ops.mean(x, axis=2)
    num, width = x.shape[1], x.shape[3]
    flat = ops.reshape(x, (-1, ops.shape(x)[2], width))  # (B * M, L, h)
    pooled = square_root_sop(flat, num_iterations, sqrt_dtype)
    return ops.reshape(pooled, (-1, num, component_output_dim(component, width)))


def grouped_components(positions, indices, kernels, component="sop", num_iterations=5, sqrt_dtype=None):
    """Outputs `(B, K, D)` of the selected components, grouped by component.

    The `P = B * K` (sample, component) pairs are laid out component by
    component in rows, each component's group padded to a multiple of `T`
    rows, so that every tile of `T` rows belongs to one component: one
    copy of a kernel serves a whole tile, where the gathered dispatch copies it for
    every pair. The layout has the static size `P + N (T - 1)` rows
    (XLA needs static shapes); padding rows get an all-zero map (its
    square root is zero, with finite gradients) and are never read back.

    Args:
        positions: feature maps as position sets `(B, L, C)`.
        indices: each sample's K components `(B, K)` (int32, K static).
        kernels: the 1x1 convolutions' stacked kernels `(N, C, h)` of all N components.
        component: `"sop"` or `"gap"`.
        num_iterations: Newton-Schulz iterations of every square root.
        sqrt_dtype: dtype of the square roots' matrix products (default float32).
    """
    num_components, top_k = kernels[0].shape[0], indices.shape[-1]
    width = kernels[-1].shape[-1]
    batch, length, channels = ops.shape(positions)
    num_pairs = batch * top_k
    tile = group_tile(num_pairs, num_components)
    num_tiles = (num_pairs + num_components * (tile - 1)) // tile
    num_rows = num_tiles * tile

    component_of_pair = ops.reshape(indices, (-1,))  # (P,) pair p = b * K + k
    one_hot = ops.one_hot(component_of_pair, num_components, dtype="int32")  # (P, N)
    rank = ops.sum(ops.cumsum(one_hot, axis=0) * one_hot, axis=1) - 1  # place in its group
    counts = ops.sum(one_hot, axis=0)  # (N,)
    padded_counts = (counts + tile - 1) // tile * tile
    padded_end = ops.cumsum(padded_counts)  # (N,) each group's end row
    row_of_pair = ops.take(padded_end - padded_counts, component_of_pair) + rank  # (P,)
    # Sample of each row; padding rows read the extra all-zero map at index B.
    pair_of_row = ops.scatter(row_of_pair[:, None], ops.arange(1, num_pairs + 1, dtype="int32"), (num_rows,))
    sample_of_row = ops.where(pair_of_row > 0, (pair_of_row - 1) // top_k, batch)
    # Component of each tile: how many groups end at or before its first row.
    tile_start = ops.arange(num_tiles, dtype="int32") * tile
    tile_component = ops.sum(ops.cast(padded_end[None, :] <= tile_start[:, None], "int32"), axis=1)
    tile_component = ops.minimum(tile_component, num_components - 1)  # trailing padding tiles

    # A pad, not a concatenation: TensorFlow's gradient of a concatenation fed by a
    # gather selects rows with a dynamic-shape `where`, which XLA fails to compile.
    padded_positions = ops.pad(positions, ((0, 1), (0, 0), (0, 0)))
    x = ops.take(padded_positions, sample_of_row, axis=0)  # (R, L, C)
    x = ops.reshape(x, (num_tiles, tile * length, channels))
    for kernel in kernels:
        x = ops.relu(ops.matmul(x, ops.take(kernel, tile_component, axis=0)))  # (R / T, T L, h)
    x = ops.reshape(x, (num_rows, length, width))
    if component == "gap":
        rows = ops.mean(x, axis=1)
    else:
        rows = square_root_sop(x, num_iterations, sqrt_dtype)  # (R, D)
    output_dim = component_output_dim(component, width)
    return ops.reshape(ops.take(rows, row_of_pair, axis=0), (-1, top_k, output_dim))


def group_tile(num_pairs, num_components):
    """Rows per tile `T` of the grouped dispatch, so that the padding `N (T - 1)` is at most `P / 16`."""
    tile = 1 + num_pairs // (GROUP_PADDING_DIVISOR * num_components)
    if isinstance(tile, int):
        return min(tile, MAX_GROUP_TILE)
    return ops.minimum(tile, MAX_GROUP_TILE)
