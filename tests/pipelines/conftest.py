"""Fixtures for the data pipeline tests: a tiny converted synthetic set, the CLI, fake source files."""

import os
import pickle
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest
import scipy.io

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(num_classes=4, train_per_class=24, val_per_class=6, image_size=16, seed=3)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """96 training and 24 validation 16x16 images, 4 shards per split; treat as read-only."""
    from pipelines import ensure_synthetic

    return ensure_synthetic(str(tmp_path_factory.mktemp("synthetic")), **TINY, workers=1)


@pytest.fixture
def tiny():
    """Options of the tiny synthetic set, for building fresh copies of it."""
    return dict(TINY)


@pytest.fixture
def run_cli():
    """Runs `python -m pipelines.convert ARGS` in a fresh process; returns the CompletedProcess."""

    def run(*args):
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet TensorFlow by itself
        return subprocess.run([sys.executable, "-m", "pipelines.convert", *map(str, args), "--no-progress"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    return run


def release_arrays(num, seed=0, low=1, high=1000):
    """Chrabaszcz-style arrays: data uint8 [num, 12288] (R|G|B planes), labels 1-based list."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (num, 12288), dtype=np.uint8)
    labels = rng.integers(low, high + 1, num).tolist()
    return data, labels


def write_pickle(path, data, labels, protocol=4, bytes_keys=False, extra=None):
    record = {"data": data, "labels": labels, **(extra or {})}
    if bytes_keys:
        record = {k.encode(): v for k, v in record.items()}
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=protocol)


def write_npz(path, data, labels):
    np.savez(path, data=data, labels=np.asarray(labels))


def matlab_hwcn(data):
    """[N, 12288] planes -> MATLAB-order 64 x 64 x 3 x N (H, W, C, N)."""
    return data.reshape(-1, 3, 64, 64).transpose(2, 3, 1, 0)


def write_mat_v5(path, variables):
    scipy.io.savemat(path, variables, do_compression=False)


def write_mat_v73(path, struct_path, arrays):
    """Writes arrays (given in MATLAB axis order) the way MATLAB -v7.3 does: HDF5, axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        group = f
        for name in struct_path:
            group = group.require_group(name)
        for name, array in arrays.items():
            group.create_dataset(name, data=np.asarray(array).T)
    with open(path, "r+b") as f:  # MATLAB's 128-byte text header in the user block
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                b"HDF5 schema 1.00 .")


def truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


@pytest.fixture
def fakes():
    """Writers of small fake source files (see the functions in this conftest)."""
    return types.SimpleNamespace(release_arrays=release_arrays, write_pickle=write_pickle,
                                 write_npz=write_npz, matlab_hwcn=matlab_hwcn, write_mat_v5=write_mat_v5,
                                 write_mat_v73=write_mat_v73, truncate=truncate)


def read_split(data_dir, split, **options):
    """All (images, labels) of a split through make_dataset(training=False), as numpy."""
    from pipelines import make_dataset

    images, labels = [], []
    for x, y in make_dataset(data_dir, split, 7, training=False, **options):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def read_all():
    return read_split
