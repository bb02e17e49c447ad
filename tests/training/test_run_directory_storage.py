"""gmsop_keras.training.run_directory on URLs: the whole protocol in memory (`ram://`), and the object lock."""

import json
import os
import socket
import time
import uuid

import numpy as np
import pytest

from gmsop_keras.training import run_directory
from gmsop_keras.training.errors import UsageError
from pipelines import storage


def _model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    return model


def test_checkpoints_best_logs_and_metrics_in_memory():
    run = run_directory.RunDirectory(f"ram://run-{uuid.uuid4().hex}")
    model = _model()
    for epoch in (1, 2, 3):
        model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
        run.save_checkpoint(model, epoch)
    assert run.checkpoints() == [3, 2]  # older ones removed
    expected = [v.numpy().copy() for v in model.weights]
    # A weights file without its marker (a write cut short) does not count and is removed.
    storage.write_text(run._weights(4), "cut short")
    assert run.checkpoints() == [3, 2]
    fresh = _model()
    assert run.restore(fresh) == 3
    assert not storage.exists(run._weights(4))
    for got, want in zip(fresh.weights, expected):
        np.testing.assert_array_equal(got.numpy(), want)
    assert fresh.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()

    assert run.best_value() is None
    run.save_best(model, 2, "val_top1", 0.5)
    run.save_best(model, 3, "val_top1", 0.75)  # replaced: best.json is rewritten whole
    assert run.best_value() == 0.75
    assert json.loads(storage.read_text(run.file("best.json")))["epoch"] == 3

    storage.write_text(run.file("log.csv"), "epoch,loss\r\n1,0.5\r\n2,0.25\r\n3,0.125\r\n", newline="")
    run.trim_logs(2)
    assert run.history() == {"loss": [0.5, 0.25]}
    assert run.finished() is None
    run.write_metrics({"epochs": 3, "top1_error": float("nan")})
    assert run.finished() == {"epochs": 3, "top1_error": None}


def test_best_keras_without_best_json_does_not_count():
    run = run_directory.RunDirectory(f"ram://run-{uuid.uuid4().hex}")
    model = _model()
    run.save_best(model, 1, "val_top1", 0.5)
    storage.remove(run.file("best.json"))  # as a kill between the model and its record leaves it
    assert run.best_value() is None


def test_object_lock_refuses_a_second_fit_and_is_gone_after():
    run = run_directory.RunDirectory(f"ram://run-{uuid.uuid4().hex}")
    with run.lock():
        holder = json.loads(storage.read_text(run.file(".lock")))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UsageError, match=r"in use by another fit .*delete ram://run-.*/\.lock"):
            with run.lock():
                pass
    assert not storage.exists(run.file(".lock"))
    with run.lock():  # free again
        pass


@pytest.mark.parametrize("host, pid, age, taken", [
    ("elsewhere", 1, 5, False),                      # fresh, on another host: refused
    ("elsewhere", 1, 10 * 60 + 5, True),             # not refreshed for 10 minutes: stale
    (socket.gethostname(), 2 ** 22 + 7, 5, True),    # this host, a process that no longer runs
])
def test_object_lock_takes_over_only_a_stale_lock(host, pid, age, taken, capsys):
    run = run_directory.RunDirectory(f"ram://run-{uuid.uuid4().hex}")
    storage.makedirs(run.path)
    record = {"host": host, "pid": pid, "started": "then", "refreshed": time.time() - age}
    storage.write_text(run.file(".lock"), json.dumps(record))
    if not taken:
        with pytest.raises(UsageError, match="last seen 5 s ago"):
            with run.lock():
                pass
        return
    with run.lock():
        assert json.loads(storage.read_text(run.file(".lock")))["pid"] == os.getpid()
    assert "taking over the stale lock" in capsys.readouterr().out


def test_file_urls_use_the_local_flock(tmp_path):
    run = run_directory.RunDirectory("file://" + str(tmp_path / "run"))
    with run.lock():
        assert "pid" in (tmp_path / "run" / ".lock").read_text()
        with pytest.raises(UsageError, match="in use by another fit"):
            with run_directory.RunDirectory(str(tmp_path / "run")).lock():
                pass


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before():
    run = run_directory.RunDirectory(f"ram://run-{uuid.uuid4().hex}")
    model = _model()
    run.save_checkpoint(model, 1)
    expected = [v.numpy().copy() for v in model.weights]
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    run.save_checkpoint(model, 2)
    storage.write_bytes(run._weights(2), storage.read_bytes(run._weights(2))[:96])  # marker, broken weights
    fresh = _model()
    assert run.restore(fresh) == 1
    for got, want in zip(fresh.weights, expected):
        np.testing.assert_array_equal(got.numpy(), want)
