"""The downsampled ImageNet-64 format (Chrabaszcz et al. 2017), shared by its readers.

Images are 64x64 RGB, shipped as flat uint8 rows of 12288 values: the R plane, then the G plane,
then the B plane (each row-major); labels are 1..1000. Read from the release's pickles
(`pipelines.imagenet64`) and from the GM-SOP authors' `.mat` file (`pipelines.matfile`).
"""

import numpy as np

from pipelines.errors import DataError

IMAGE_SIZE = 64
FLAT_SIZE = 3 * IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 1000


def flat_to_hwc(rows):
    """[N, 12288] rows of R|G|B planes -> [N, 64, 64, 3]."""
    return np.ascontiguousarray(rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))


def check_labels(labels, path, low=1, high=NUM_CLASSES):
    """Labels as int64, or a DataError naming the first one out of [low, high]."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
            raise DataError(f"{path}: labels must be integers; found {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < low) | (labels > high))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is out of range {low}..{high} "
                        f"({bad.size} such labels); downsampled-ImageNet labels are 1-based")
    return labels
