"""Shard planning, atomic shard files, resume after an interruption, and no silent overwrite."""

import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import DataError, read_manifest, synthetic_source, write_dataset
from pipelines.resume import PLAN_NAME, PROGRESS_NAME
from pipelines.shards import plan_shards
from pipelines.source import Examples, Source, Split
from pipelines.tfrecord import decode_example, write_shard


def shard_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tfrecord"))


def test_plan_respects_min_shards_size_and_chunks(tiny):
    source = synthetic_source(**tiny)  # 96 train, 24 validation, 16x16 (896 bytes per record)
    plan = plan_shards(source, shard_size_mb=100, min_shards=4)
    train = [t for t in plan if t["split"] == "train"]
    assert [t["file"] for t in train] == [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    assert [(t["start"], t["stop"]) for t in train] == [(0, 24), (24, 48), (48, 72), (72, 96)]
    assert len(plan_shards(source, shard_size_mb=0.01, min_shards=1)) > 8  # ~11 records per 10 kB shard
    assert len([t for t in plan_shards(source, min_shards=1000) if t["split"] == "validation"]) == 24
    chunked = Source("x", (2, 2, 3), 2, {"train": Split(10, None, chunks=(7, 3))})
    ranges = [(t["start"], t["stop"], t["chunk"]) for t in plan_shards(chunked, min_shards=2)]
    assert ranges == [(0, 4, 0), (4, 7, 0), (7, 10, 1)]


def test_write_shard_is_atomic_and_round_trips(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    entry = write_shard(str(tmp_path / "a.tfrecord"), images, [2, 0, 1])
    assert entry["num_examples"] == 3 and entry["bytes"] == os.path.getsize(tmp_path / "a.tfrecord")
    records = [decode_example(r.numpy()) for r in tf.data.TFRecordDataset(str(tmp_path / "a.tfrecord"))]
    for (image, label), want_image, want_label in zip(records, images, [2, 0, 1]):
        np.testing.assert_array_equal(image, want_image)
        assert label == want_label

    def failing():
        yield images[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_shard(str(tmp_path / "b.tfrecord"), failing(), [0, 1])
    assert sorted(os.listdir(tmp_path)) == ["a.tfrecord"]  # neither b.tfrecord nor b.tfrecord.tmp


class FailAfter:
    """Wraps a split's reader to fail on the `limit`-th call, like a crash in the middle of a run."""

    def __init__(self, read, limit):
        self.read, self.limit, self.calls = read, limit, 0

    def __call__(self, start, stop):
        self.calls += 1
        if self.calls >= self.limit:
            raise KeyboardInterrupt
        return self.read(start, stop)


def test_interrupted_run_resumes_and_keeps_finished_shards(tmp_path, synthetic_dir, tiny):
    out = str(tmp_path / "out")
    source = synthetic_source(**tiny)
    source.splits["train"].read = FailAfter(source.splits["train"].read, limit=3)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(source, out, workers=1, progress=False)
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert shard_files(out) == ["train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"]
    kept = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in shard_files(out)}
    # Leftovers of a hard kill: a partial temp shard and a shard whose progress line never got written.
    with open(os.path.join(out, "train-00002-of-00004.tfrecord.tmp"), "wb") as f:
        f.write(b"partial")
    with open(os.path.join(out, "validation-00003-of-00004.tfrecord"), "wb") as f:
        f.write(b"unrecorded")

    manifest = write_dataset(synthetic_source(**tiny), out, workers=2, progress=False)
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in kept} == kept  # not rewritten
    assert sorted(os.listdir(out)) == sorted(["manifest.json"] + shard_files(synthetic_dir))
    for split in ("train", "validation"):  # same bytes as an uninterrupted conversion
        assert ([s["sha256"] for s in manifest["splits"][split]["shards"]] ==
                [s["sha256"] for s in read_manifest(synthetic_dir)["splits"][split]["shards"]])


def test_run_killed_before_the_manifest_resumes_without_rewriting(tmp_path, monkeypatch, tiny):
    import pipelines.writer

    out = str(tmp_path / "out")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.writer, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(synthetic_source(**tiny), out, workers=1, progress=False)
    monkeypatch.undo()
    with pytest.raises(DataError, match="no manifest"):
        read_manifest(out)
    mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in shard_files(out)}
    assert len(mtimes) == 8
    manifest = write_dataset(synthetic_source(**tiny), out, workers=1, progress=False)
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in shard_files(out)} == mtimes
    assert manifest["splits"]["train"]["num_examples"] == 96


def test_finished_output_is_not_overwritten(tmp_path, tiny):
    out = str(tmp_path / "out")
    write_dataset(synthetic_source(**tiny), out, workers=1, progress=False)
    before = read_manifest(out)
    with pytest.raises(DataError, match="already holds a finished dataset.*--overwrite"):
        write_dataset(synthetic_source(**{**tiny, "seed": 9}), out, workers=1, progress=False)
    assert read_manifest(out) == before
    (tmp_path / "out" / "notes.txt").write_text("mine")
    after = write_dataset(synthetic_source(**{**tiny, "seed": 9}), out, workers=1, progress=False,
                          overwrite=True)
    assert after["source"]["seed"] == 9 and (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert not {PLAN_NAME, PROGRESS_NAME} & set(os.listdir(out))


def test_unfinished_run_with_other_settings_is_refused(tmp_path, tiny):
    out = str(tmp_path / "out")
    source = synthetic_source(**tiny)
    source.splits["validation"].read = FailAfter(source.splits["validation"].read, limit=1)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(source, out, workers=1, progress=False)
    with pytest.raises(DataError, match="unfinished conversion with other settings"):
        write_dataset(synthetic_source(**tiny), out, workers=1, progress=False, shard_size_mb=0.01)
    write_dataset(synthetic_source(**tiny), out, workers=1, progress=False, shard_size_mb=0.01,
                  overwrite=True)


def test_bad_examples_from_a_source_stop_the_run(tmp_path):
    def read(start, stop):
        return Examples(np.zeros((stop - start, 2, 2, 3), np.uint8), np.full(stop - start, 5))

    source = Source("folder", (2, 2, 3), 3, {"train": Split(4, read)}, description={"path": "/data/x"})
    with pytest.raises(DataError, match=r"/data/x \(train examples 0..0\): label 5 is out of range 0..2"):
        write_dataset(source, str(tmp_path), min_shards=4, workers=1, progress=False)
    assert not os.path.exists(tmp_path / "manifest.json")


def test_foreign_shard_files_are_not_deleted(tmp_path, tiny):
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"someone else's data")
    with pytest.raises(DataError, match="holds shard files .* but no record of the conversion"):
        write_dataset(synthetic_source(**tiny), str(tmp_path), workers=1, progress=False)
    assert (tmp_path / "train-00000-of-00001.tfrecord").read_bytes() == b"someone else's data"


@pytest.mark.parametrize("scheme", ["ram", "file"])
def test_conversion_to_a_url_needs_no_rename_and_resumes_after_a_cut_shard(scheme, tmp_path, synthetic_dir, tiny):
    from pipelines import make_dataset, storage

    out = f"ram://convert-{tmp_path.name}/out" if scheme == "ram" else f"file://{tmp_path}/out"
    source = synthetic_source(**tiny)
    source.splits["train"].read = FailAfter(source.splits["train"].read, limit=3)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(source, out, workers=1, progress=False)
    assert not storage.exists(storage.join(out, "manifest.json"))
    # A shard cut short under its final name (as a kill leaves it on an object store): not recorded.
    storage.write_bytes(storage.join(out, "train-00002-of-00004.tfrecord"), b"cut short")
    manifest = write_dataset(synthetic_source(**tiny), out, workers=1, progress=False)
    assert sorted(storage.listdir(out)) == sorted(["manifest.json"] + shard_files(synthetic_dir))
    for split in ("train", "validation"):  # the same bytes as a local, uninterrupted conversion
        assert ([s["sha256"] for s in manifest["splits"][split]["shards"]] ==
                [s["sha256"] for s in read_manifest(synthetic_dir)["splits"][split]["shards"]])
    assert read_manifest(out)["splits"] == manifest["splits"]
    labels = np.concatenate([y.numpy() for _, y in make_dataset(out, "validation", 16, training=False)])
    local = np.concatenate([y.numpy() for _, y in make_dataset(synthetic_dir, "validation", 16, training=False)])
    np.testing.assert_array_equal(labels, local)
