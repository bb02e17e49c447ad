"""Two real workers (MultiWorkerMirroredStrategy, TF_CONFIG on loopback ports) read disjoint shards."""

import hashlib
import json
import os
import socket
import subprocess
import sys


from pipelines import synthetic_source

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import hashlib, json, os, sys
import tensorflow as tf
from pipelines import make_dataset

data_dir, output = sys.argv[1], sys.argv[2]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
result = {"workers": strategy.num_replicas_in_sync}
for training in (False, True):
    dataset = make_dataset(data_dir, "train", 8, training=training, augment="flip", drop_remainder=False,
                           seed=0)
    seen = []
    for images, labels in strategy.experimental_distribute_dataset(dataset):
        for part in strategy.experimental_local_results(images):
            seen += [hashlib.sha1(image.tobytes()).hexdigest() for image in part.numpy()]
    result["training" if training else "evaluation"] = seen
json.dump(result, open(output, "w"))
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(data_dir, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes, outputs = [], []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        outputs.append(str(tmp_path / f"worker{index}.json"))
        processes.append(subprocess.Popen([sys.executable, "-c", WORKER, data_dir, outputs[-1]],
                                          env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr[-3000:]
    return [json.load(open(path)) for path in outputs]


def test_each_example_is_read_by_exactly_one_worker(synthetic_dir, tiny, tmp_path):
    examples = synthetic_source(**tiny).splits["train"].read(0, 96)
    index_of = {}
    for index, image in enumerate(examples.images):  # a flipped image is the same example
        index_of[hashlib.sha1(image.tobytes()).hexdigest()] = index
        index_of.setdefault(hashlib.sha1(image[:, ::-1].tobytes()).hexdigest(), index)
    results = run_workers(synthetic_dir, tmp_path)
    assert all(r["workers"] == 2 for r in results)
    for mode in ("evaluation", "training"):
        seen = [[index_of[key] for key in r[mode]] for r in results]
        assert len(seen[0]) == len(seen[1]) == 48, mode  # two of the four shard files each
        assert not set(seen[0]) & set(seen[1]), mode
        assert sorted(seen[0] + seen[1]) == list(range(96)), mode
    evaluation = [r["evaluation"] for r in results]
    assert all(key == hashlib.sha1(examples.images[index_of[key]].tobytes()).hexdigest()
               for keys in evaluation for key in keys)  # no augmentation when evaluating
