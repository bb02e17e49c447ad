"""Replacing and resuming conversions: the old dataset stays whole, changed sources are never mixed in."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, read_manifest, synthetic_source, verify_manifest, write_dataset
from pipelines.folder import folder_source
from pipelines.shards import plan_shards
from pipelines.writer import STAGING_NAME

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = ["synthetic", "--num-classes", "3", "--train-per-class", "4", "--val-per-class", "2",
             "--image-size", "8"]


def error_lines(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def write_bmp_tree(root, per_class=6):
    """2 classes of 8x8 BMPs (uncompressed: a changed image keeps its file size)."""
    rng = np.random.default_rng(5)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.bmp")


def shard_inputs(tree, shard_index, min_shards=4, size=(8, 8)):
    """The image files that go into training shard `shard_index` of the folder conversion of `tree`."""
    source = folder_source(str(tree), size)
    task = [t for t in plan_shards(source, min_shards=min_shards) if t["split"] == "train"][shard_index]
    return source.splits["train"].inputs(task["start"], task["stop"])


def snapshot(folder):
    """Every file's bytes, by name (sub-folders left out)."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if (folder / name).is_file()}


def records(folder):
    """Every record of every shard, in manifest order, decoded (shard bytes differ between processes:
    the Example proto's feature map is serialised in no fixed order)."""
    import tensorflow as tf

    from pipelines.tfrecord import decode_example

    manifest = read_manifest(str(folder))
    found = []
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            for record in tf.data.TFRecordDataset(str(folder / shard["file"])):
                image, label = decode_example(record.numpy())
                found.append((image.tobytes(), label))
    return found


def test_overwrite_with_a_bad_source_keeps_the_old_dataset_until_the_new_one_is_complete(tmp_path, run_cli):
    out = tmp_path / "out"
    assert run_cli(*SYNTHETIC, "--output", out).returncode == 0
    old = snapshot(out)
    tree = tmp_path / "tree"
    write_bmp_tree(tree)
    broken = shard_inputs(tree, 3)[0]  # in the last training shard: three shards finish before it
    with open(broken, "wb") as f:
        f.write(b"BM not really a bitmap")
    args = ["folder", "--source", tree, "--size", "8", "--output", out, "--workers", "1", "--overwrite"]

    lines = error_lines(run_cli("folder", "--source", tmp_path / "nowhere", "--size", "8", "--output", out,
                                "--overwrite"))
    assert lines == [f"error: {tmp_path / 'nowhere'}: no such folder"]
    assert snapshot(out) == old
    lines = error_lines(run_cli(*args))
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}: unreadable image")
    assert snapshot(out) == old  # every old shard and the old manifest, byte for byte
    verify_manifest(str(out), checksums=True)
    staged = sorted(n for n in os.listdir(out / STAGING_NAME) if n.endswith(".tfrecord"))
    assert staged == [f"train-0000{i}-of-00004.tfrecord" for i in range(3)]

    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(broken, format="BMP")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(str(out))
    assert manifest["dataset"] == "folder" and manifest["splits"]["train"]["num_examples"] == 12
    shards = [shard["file"] for shard in manifest["splits"]["train"]["shards"]]
    assert sorted(os.listdir(out)) == sorted(shards + ["manifest.json"])  # no old shard, no staging left
    verify_manifest(str(out), checksums=True)
    fresh = tmp_path / "fresh"  # an uninterrupted conversion of the same tree, here (a process less)
    write_dataset(folder_source(str(tree), (8, 8)), str(fresh), progress=False)
    assert records(out) == records(fresh)


def test_interrupted_switch_never_leaves_a_lying_manifest_and_is_finished_by_the_next_run(
        tmp_path, tiny, monkeypatch):
    import pipelines.writer

    out = str(tmp_path / "out")
    write_dataset(synthetic_source(**tiny), out, workers=1, progress=False)
    replacement = dict(tiny, seed=11)
    moves = []

    def killed_after_two_moves(src, dst):
        if len(moves) == 2:
            raise KeyboardInterrupt
        moves.append(dst)
        os.rename(src, dst)

    monkeypatch.setattr(pipelines.writer, "_move", killed_after_two_moves)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(synthetic_source(**replacement), out, workers=1, progress=False, overwrite=True)
    monkeypatch.undo()
    assert len(moves) == 2  # killed half-way through moving the new shards up
    with pytest.raises(DataError, match="no manifest"):  # an unfinished folder, never a lying manifest
        read_manifest(out)
    manifest = write_dataset(synthetic_source(**replacement), out, workers=1, progress=False, overwrite=True)
    assert manifest["source"]["seed"] == 11 and read_manifest(out) == manifest
    verify_manifest(out, checksums=True)
    assert not os.path.exists(os.path.join(out, STAGING_NAME))
    fresh = str(tmp_path / "fresh")
    write_dataset(synthetic_source(**replacement), fresh, workers=1, progress=False)
    assert records(tmp_path / "out") == records(tmp_path / "fresh")


def test_resume_after_a_source_image_changed_is_refused_then_redone(tmp_path, run_cli):
    tree, out = tmp_path / "tree", tmp_path / "out"
    write_bmp_tree(tree)
    broken = shard_inputs(tree, 3)[0]
    good = open(broken, "rb").read()
    with open(broken, "wb") as f:
        f.write(b"BM not really a bitmap")
    args = ["folder", "--source", tree, "--size", "8", "--output", out, "--workers", "1"]
    assert error_lines(run_cli(*args))[0].startswith(f"error: {broken}: unreadable image")
    progress = [json.loads(line) for line in (out / ".convert-progress.jsonl").read_text().splitlines()]
    assert [entry["file"] for entry in progress] == [f"train-0000{i}-of-00004.tfrecord" for i in range(3)]
    with open(broken, "wb") as f:  # the fix the error asked for
        f.write(good)
    # Another picture under the same name, same size and same modification time: only the content differs.
    changed = shard_inputs(tree, 1)[1]
    stat = os.stat(changed)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(changed, format="BMP")
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(changed) == stat.st_size

    lines = error_lines(run_cli(*args))
    assert lines == [f"error: {changed}: changed (size, time or content) since it was converted into "
                     f"{out / 'train-00001-of-00004.tfrecord'}; finishing would mix old and new images: "
                     "pass --overwrite to convert again from scratch"]
    assert not (out / "manifest.json").exists()
    result = run_cli(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "fresh"  # an uninterrupted conversion of the same tree, here (a process less)
    write_dataset(folder_source(str(tree), (8, 8)), str(fresh), progress=False)
    assert records(out) == records(fresh)  # all new images, none of the old ones


def test_train_only_imagenet64_gets_a_note_and_two_sources_give_both_splits(tmp_path, fakes, run_cli):
    train_dir, val_dir = tmp_path / "Imagenet64_train", tmp_path / "Imagenet64_val"
    train_dir.mkdir()
    val_dir.mkdir()
    fakes.write_npz(train_dir / "train_data_batch_1.npz", *fakes.release_arrays(8, seed=1))
    fakes.write_npz(val_dir / "val_data.npz", *fakes.release_arrays(4, seed=2))
    result = run_cli("imagenet64", "--source", train_dir, "--output", tmp_path / "train-only", "--min-shards", "1")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {train_dir}: no validation split found, so {tmp_path / 'train-only'} has a train "
                     "split only; add the folder with val_data (the Imagenet64_val download): --source TRAIN_DIR "
                     "--source VAL_DIR, then convert again with --overwrite"]
    result = run_cli("imagenet64", "--source", train_dir, "--source", val_dir, "--output", tmp_path / "both",
                     "--min-shards", "1")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr
    splits = read_manifest(str(tmp_path / "both"))["splits"]
    assert {name: split["num_examples"] for name, split in splits.items()} == {"train": 8, "validation": 4}


def test_killed_replacement_keeps_the_old_dataset_and_a_changed_source_is_redone(tmp_path, run_cli):
    """A real `kill -9` of a real conversion process, after its first staged shard."""
    import signal
    import subprocess
    import sys
    import time

    out, tree = tmp_path / "out", tmp_path / "tree"
    assert run_cli(*SYNTHETIC, "--output", out).returncode == 0
    old = snapshot(out)
    rng = np.random.default_rng(6)
    for cls in ("cat", "dog"):  # 256x256 originals: resizing them keeps the process busy for a while
        (tree / cls).mkdir(parents=True)
        for i in range(60):
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tree / cls / f"{i}.bmp")
    args = ["folder", "--source", tree, "--size", "16", "--output", out, "--workers", "1", "--min-shards", "30",
            "--overwrite", "--no-progress"]
    progress = out / STAGING_NAME / ".convert-progress.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "pipelines.convert", *map(str, args)], cwd=REPO_ROOT,
                               env=dict(os.environ, PYTHONPATH=REPO_ROOT), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text().strip()) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(progress.read_text().splitlines())
    assert 1 <= finished < 30, "the conversion ended before it could be killed half-way"
    assert snapshot(out) == old  # the old dataset, untouched
    verify_manifest(str(out), checksums=True)

    changed = shard_inputs(tree, 0, min_shards=30, size=(16, 16))[0]  # in the first shard, finished before the kill
    Image.fromarray(np.full((256, 256, 3), 77, np.uint8)).save(changed, format="BMP")
    result = run_cli(*args[:-1])
    assert result.returncode == 0, result.stderr
    images, _ = zip(*records(out))
    assert np.full((16, 16, 3), 77, np.uint8).tobytes() in images  # the new picture, not the old one
    fresh = tmp_path / "fresh"
    write_dataset(folder_source(str(tree), (16, 16)), str(fresh), min_shards=30, progress=False)
    assert records(out) == records(fresh)
