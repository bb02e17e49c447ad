"""fit under MirroredStrategy (2 logical CPU devices) and MultiWorkerMirroredStrategy: two processes on
loopback launched as SLURM's srun launches them and as Kubernetes' TFJob operator does, the refusal of
too few shards, and a kill followed by a restart of every task."""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["--backbone", "resnet18", "--lr", "0.01", "--seed", "0", "--verbose", "2"]

MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from gmsop_keras.cli.errors import run_cli
    from gmsop_keras.fit import main
    sys.exit(run_cli(main, sys.argv[1:]))
    """
)


def run(args, env=None, script=None, timeout=400):
    cmd = [sys.executable] + (["-c", script] if script else ["-m", "gmsop_keras.fit"]) + args
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_mirrored_strategy_on_two_logical_devices(tiny_synthetic, tmp_path):
    model_dir = str(tmp_path / "mirrored")
    bad = run(["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--strategy", "mirrored",
               "--batch-size", "15", "--model-dir", model_dir] + COMMON, script=MIRRORED)
    assert bad.returncode == 2 and "not divisible by the 2 replicas" in bad.stderr
    assert "Traceback" not in bad.stderr

    good = run(["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--strategy", "mirrored",
                "--batch-size", "16", "--epochs", "2", "--model-dir", model_dir] + COMMON, script=MIRRORED)
    assert good.returncode == 0, good.stderr[-3000:]
    assert "validation: top-1 error" in good.stdout
    with open(os.path.join(model_dir, "component_usage.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # both replicas' samples are counted: 4 steps x 16 samples x K = 2
        assert sum(int(row[f"component_{i}"]) for i in range(1, 5)) == 4 * 16 * 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair():
    """A port p with p + 1 free too: srun's tasks on one node listen on port_base + local task id."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two consecutive free ports")


# How a test names its data and model folders (a local folder -> the string given to fit). The
# launches run once per entry: plain paths, and `file://` URLs, which take the code path of remote
# storage (tf.io.gfile; pipelines.storage). The kill test runs on plain paths (tests/test_storage*
# kill and resume single-process runs on file:// URLs).
PATH_MAKERS = {"path": str, "file_url": lambda path: "file://" + os.path.abspath(str(path))}


def base_env():
    """This process' environment without any cluster of its own (the tests may run inside a SLURM job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "TF_CONFIG"}
    return dict(env, PYTHONPATH=ROOT)


def srun_env(rank, num_tasks, node="localhost"):
    """The variables srun sets in task `rank` of a one-node job step (`srun --ntasks N`)."""
    return dict(
        base_env(), SLURM_JOB_ID="4242", SLURM_STEP_ID="0", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
        SLURM_NODEID="0", SLURM_NTASKS=str(num_tasks), SLURM_STEP_NUM_TASKS=str(num_tasks),
        SLURM_JOB_NUM_NODES="1", SLURM_STEP_NUM_NODES="1", SLURM_JOB_NODELIST=node, SLURM_STEP_NODELIST=node,
        SLURM_TASKS_PER_NODE=str(num_tasks), SLURM_STEP_TASKS_PER_NODE=str(num_tasks),
    )


def tfjob_env(task_type, index, chief, workers):
    """TF_CONFIG as Kubeflow's TFJob operator writes it for a job with one Chief and Worker replicas."""
    config = {"cluster": {"chief": [chief], "worker": workers}, "task": {"type": task_type, "index": index},
              "environment": "cloud"}
    return dict(base_env(), TF_CONFIG=json.dumps(config))


def start(envs, args, cwd=ROOT):
    return [subprocess.Popen([sys.executable, "-m", "gmsop_keras.fit"] + args, cwd=cwd, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for env in envs]


def wait(processes, timeout=300):
    """[(exit status, stdout, stderr)] of every process; none is left running."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def train_args(data_dir, model_dir, epochs=2):
    return ["--dataset", data_dir, "--head", "gm-gap-4-2", "--strategy", "multi-worker", "--batch-size", "16",
            "--epochs", str(epochs), "--steps-per-epoch", "3", "--model-dir", model_dir] + COMMON


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module", params=sorted(PATH_MAKERS))
def launches(request, tiny_synthetic, tmp_path_factory):
    """The same 2-epoch run launched by srun (2 tasks, worker 0 the chief; exporting to saved_models/ in
    the tasks' working folder) and by a TFJob (chief + worker)."""
    make_path = PATH_MAKERS[request.param]
    root = tmp_path_factory.mktemp("launch")
    runs = {}
    port = free_port_pair()
    srun_args = train_args(make_path(tiny_synthetic), make_path(root / "srun")) + ["--slurm-port-base", str(port)]
    runs["srun"] = (str(root / "srun"), wait(start(
        [srun_env(rank, 2) for rank in range(2)], srun_args + ["--export", "tiny"], cwd=root)), port)
    # The same job submitted again: every task finds the chief's metrics.json and trains nothing.
    runs["again"] = wait(start([srun_env(rank, 2) for rank in range(2)], srun_args), timeout=120)
    runs["root"] = str(root)
    runs["srun_dir_given"] = make_path(root / "srun")
    chief, worker = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    runs["tfjob"] = (str(root / "tfjob"), wait(start(
        [tfjob_env("chief", 0, chief, [worker]), tfjob_env("worker", 0, chief, [worker])],
        train_args(make_path(tiny_synthetic), make_path(root / "tfjob")))), chief)
    return runs


def check_chief_writes_alone(model_dir, worker_dir, results):
    for status, out, err in results:
        assert status == 0, err[-3000:]
        assert "Traceback" not in err
    assert "validation: top-1 error" in results[0][1]
    assert "worker finished; the chief writes" in results[1][1]
    for name in ("config.yaml", "final.keras", "best.keras", "best.json", "metrics.json", "log.csv",
                 "component_usage.csv"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    # The worker took part in every save but kept nothing: only its lock file is left.
    assert os.listdir(os.path.join(model_dir, "workers")) == [worker_dir]
    assert os.listdir(os.path.join(model_dir, "workers", worker_dir)) == [".lock"]
    metrics = read_json(os.path.join(model_dir, "metrics.json"))
    assert metrics["epochs"] == 2 and len(metrics["history"]["loss"]) == 2
    with open(os.path.join(model_dir, "log.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    with open(os.path.join(model_dir, "component_usage.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # both workers' samples are counted: 3 steps x 16 samples x K = 2
        assert sum(int(row[f"component_{i}"]) for i in range(1, 5)) == 3 * 16 * 2
    return metrics


@pytest.mark.slow
def test_srun_two_tasks_on_localhost(launches):
    model_dir, results, port = launches["srun"]
    assert (f"multi-worker cluster from SLURM (job 4242, step 0): worker 0 of 2 tasks (2 worker) at "
            f"localhost:{port}; chief: worker 0") in results[0][1]
    assert f"worker 1 of 2 tasks (2 worker) at localhost:{port + 1}" in results[1][1]
    check_chief_writes_alone(model_dir, "worker_1", results)
    # The chief alone exported (from final.keras), once.
    assert os.listdir(os.path.join(launches["root"], "saved_models", "tiny")) == ["1"]
    assert os.path.isfile(os.path.join(launches["root"], "saved_models", "tiny", "1", "saved_model.pb"))
    assert "exported" in results[0][1] and "exported" not in results[1][1]
    for status, out, err in launches["again"]:
        assert status == 0, err[-3000:]
        assert f"{launches['srun_dir_given']} holds a finished run of 2 epochs" in out and "nothing to do" in out


@pytest.mark.slow
def test_tfjob_chief_and_worker_on_loopback(launches):
    model_dir, results, chief = launches["tfjob"]
    assert ("multi-worker cluster from TF_CONFIG: chief 0 of 2 tasks (1 chief, 1 worker); chief: chief 0"
            in results[0][1])
    assert "multi-worker cluster from TF_CONFIG: worker 0 of 2 tasks" in results[1][1]
    check_chief_writes_alone(model_dir, "worker_0", results)


def epoch_values(output):
    """The metrics of Keras' epoch lines ("loss: 2.4260 - top1: 0.3125 ..."), in order."""
    return re.findall(r"(\w+): (\d+\.\d{4})", output)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["srun", "tfjob"])
def test_tasks_train_one_model_together(launches, launcher):
    # Every step's loss and metrics are reduced over both workers: both print the same numbers.
    _, results, _ = launches[launcher]
    chief, worker = (epoch_values(out) for _, out, _ in results)
    assert len(chief) == 2 * 6 and chief == worker


def test_too_few_shards_for_the_workers_is_refused_before_training(tiny_synthetic, tmp_path):
    # Three tasks, two training shards: one worker would have no file to read. Only the chief is
    # started: the refusal comes before any task waits for the others.
    model_dir = str(tmp_path / "refused")
    chief = f"127.0.0.1:{free_port()}"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    (status, out, err), = wait(start([tfjob_env("chief", 0, chief, workers)], train_args(tiny_synthetic, model_dir)),
                               timeout=120)
    assert status == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"error: {tiny_synthetic}: the train split has 2 shard files for 3 workers, and each worker reads its "
        "own files; convert it again with python -m pipelines.convert ... --min-shards 3 (or more), or train "
        "on fewer workers")
    assert "Traceback" not in err and not os.path.exists(model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("path_kind", ["path"])
def test_killed_tasks_restarted_resume_from_the_same_epoch(tiny_synthetic, tmp_path, path_kind):
    make_path = PATH_MAKERS[path_kind]
    model_dir = str(tmp_path / "killed")
    args = (train_args(make_path(tiny_synthetic), make_path(model_dir), epochs=3)
            + ["--slurm-port-base", str(free_port_pair())])
    marker = os.path.join(model_dir, "backup", "epoch-00001.json")
    processes = start([srun_env(rank, 2) for rank in range(2)], args)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(marker) and time.monotonic() < deadline and processes[0].poll() is None:
            time.sleep(0.2)
        assert os.path.exists(marker), "the first epoch's checkpoint never appeared"
        processes[1].send_signal(signal.SIGKILL)  # the worker's node fails, with no chance to clean up
        (status, _, err), = wait(processes[:1], timeout=240)  # the chief notices by itself and stops
        assert status not in (0, None) and "UnavailableError" in err, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        wait(processes[1:])
    assert not os.path.exists(os.path.join(model_dir, "metrics.json"))
    kept = sorted(int(name[6:11]) for name in os.listdir(os.path.join(model_dir, "backup")) if name.endswith(".json"))

    args[args.index("--slurm-port-base") + 1] = str(free_port_pair())  # the old ports may linger
    results = wait(start([srun_env(rank, 2) for rank in range(2)], args))
    for status, out, err in results:
        assert status == 0, err[-3000:]
    resumed = [re.search(r"resuming (\S+) after epoch (\d+) of 3", out) for _, out, _ in results]
    assert all(resumed), [out[-2000:] for _, out, _ in results]
    assert {m[1] for m in resumed} == {make_path(model_dir)} and {int(m[2]) for m in resumed} == {kept[-1]}
    with open(os.path.join(model_dir, "log.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2", "3"]
    assert read_json(os.path.join(model_dir, "metrics.json"))["epochs"] == 3
    assert os.listdir(os.path.join(model_dir, "workers", "worker_1")) == [".lock"]
