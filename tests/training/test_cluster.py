"""gmsop_keras.training.cluster: the cluster from TF_CONFIG or SLURM, the chief, each task's folder, shards per worker."""

import json
import os
import subprocess
import sys

import pytest

from gmsop_keras.training import cluster
from gmsop_keras.training.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def clean_env(monkeypatch):
    """No TF_CONFIG and no SLURM variable; whatever a test sets is undone afterwards."""
    for name in [n for n in os.environ if n.startswith("SLURM_")] + ["TF_CONFIG", "CUDA_VISIBLE_DEVICES"]:
        monkeypatch.setenv(name, "")  # recorded first, so that the value a test writes is removed too
        monkeypatch.delenv(name)
    return monkeypatch


def set_srun(monkeypatch, rank, num_tasks, nodelist, tasks_per_node):
    for name, value in dict(SLURM_JOB_ID="77", SLURM_STEP_ID="3", SLURM_PROCID=rank, SLURM_STEP_NUM_TASKS=num_tasks,
                            SLURM_STEP_NODELIST=nodelist, SLURM_STEP_TASKS_PER_NODE=tasks_per_node).items():
        monkeypatch.setenv(name, str(value))


def test_srun_two_nodes_two_tasks_each(clean_env):
    # srun --nodes 2 --ntasks-per-node 2 on node01 and node02; this is the second task of node02.
    set_srun(clean_env, 3, 4, "node[01-02]", "2(x2)")
    line = cluster.configure_cluster(port_base=9000)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["node01:9000", "node01:9001", "node02:9000", "node02:9001"]},
        "task": {"type": "worker", "index": 3},
    }
    assert line == ("multi-worker cluster from SLURM (job 77, step 3): worker 3 of 4 tasks (4 worker) at "
                    "node02:9001; chief: worker 0")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the GPUs are left as srun bound them
    assert not cluster.is_chief() and cluster.num_workers() == 4
    assert cluster.task_model_dir("runs/a") == os.path.join("runs/a", "workers", "worker_3")


def test_srun_first_task_is_the_chief(clean_env):
    set_srun(clean_env, 0, 3, "a1,b7", "2,1")
    cluster.configure_cluster()
    assert json.loads(os.environ["TF_CONFIG"])["cluster"] == {"worker": ["a1:8888", "a1:8889", "b7:8888"]}
    assert cluster.is_chief() and cluster.task_model_dir("runs/a") == "runs/a"


def test_tf_config_is_kept_and_wins_over_slurm(clean_env):
    set_srun(clean_env, 1, 2, "node1", "2")
    config = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 1},
              "environment": "cloud"}
    clean_env.setenv("TF_CONFIG", json.dumps(config))
    line = cluster.configure_cluster()
    assert json.loads(os.environ["TF_CONFIG"]) == config
    assert line == "multi-worker cluster from TF_CONFIG: worker 1 of 3 tasks (1 chief, 2 worker); chief: chief 0"
    assert not cluster.is_chief() and cluster.num_workers() == 3
    assert cluster.task_model_dir("m") == os.path.join("m", "workers", "worker_1")
    clean_env.setenv("TF_CONFIG", json.dumps(dict(config, task={"type": "chief", "index": 0})))
    assert cluster.is_chief()


def test_no_cluster_names_both_ways(clean_env):
    with pytest.raises(UsageError, match=r"start every task with srun inside a SLURM job .* or set TF_CONFIG as "
                                         r"Kubernetes' TFJob operator does; see docs/distributed.md"):
        cluster.configure_cluster()


def test_a_batch_script_without_srun_is_told_to_use_it(clean_env):
    clean_env.setenv("SLURM_JOB_ID", "12")
    clean_env.setenv("SLURM_NTASKS", "2")
    with pytest.raises(UsageError) as error:
        cluster.configure_cluster()
    assert str(error.value) == (
        "SLURM job 12 without a job step: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, "
        "SLURM_STEP_TASKS_PER_NODE are set by srun; start the command with srun inside the batch script "
        "(see docs/distributed.md)")


def test_gpus_per_task_beyond_the_visible_gpus_is_refused(clean_env):
    # The resolver gives the second task of a node GPUs 2 and 3 of the four CUDA_VISIBLE_DEVICES
    # names; this machine's TensorFlow sees none, so the assignment cannot be applied.
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has GPUs: the refusal needs a task that sees fewer than it is assigned")
    set_srun(clean_env, 1, 2, "gpu01", "2")
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    with pytest.raises(UsageError, match=r"--slurm-gpus-per-task assigns GPUs 2,3 to this task, but it sees 0"):
        cluster.configure_cluster(gpus_per_task=2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # the launcher's value is left as it was
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UsageError, match=r"cannot derive the cluster from SLURM's variables: Requested more GPUs "
                                         r"per node than available"):
        cluster.configure_cluster(gpus_per_task=1)  # two tasks, one GPU on the node


@pytest.mark.parametrize("text, problem", [
    ("{cluster", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG needs "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "is not in its cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "is not in its cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "is not in its cluster"),
])
def test_an_unusable_tf_config_is_named(clean_env, text, problem):
    clean_env.setenv("TF_CONFIG", text)
    with pytest.raises(UsageError, match=problem):
        cluster.configure_cluster()


def test_shards_per_worker(clean_env):
    manifest = {"splits": {"train": {"shards": [{}] * 4}, "validation": {"shards": [{}] * 2}}}
    clean_env.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker"}}))
    cluster.check_shards(manifest, "data")  # 4 and 2 shards for 2 workers
    clean_env.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]},
                                              "task": {"type": "chief", "index": 0}}))
    with pytest.raises(UsageError) as error:
        cluster.check_shards(manifest, "data")
    assert str(error.value) == (
        "data: the validation split has 2 shard files for 3 workers, and each worker reads its own files; convert "
        "it again with python -m pipelines.convert ... --min-shards 3 (or more), or train on fewer workers")


def test_fit_without_a_cluster_answers_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "gmsop_keras.fit", "--strategy", "multi-worker", "--model-dir", str(tmp_path / "m")],
        cwd=ROOT, env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --strategy multi-worker needs a cluster: start every task with srun inside a SLURM job (the cluster "
        "is read from SLURM's variables), or set TF_CONFIG as Kubernetes' TFJob operator does; see "
        "docs/distributed.md"]
    assert not os.path.exists(tmp_path / "m")
