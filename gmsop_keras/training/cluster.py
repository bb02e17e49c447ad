"""The cluster of a multi-worker run: where it comes from, which task is the chief, where each task
writes, and whether the data has a share of files for every worker.

A multi-worker run learns its cluster in one of two ways, whichever the launcher provides:

- Kubernetes (Kubeflow's TFJob operator) and hand-written launches set `TF_CONFIG`, the JSON
  `{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": ..., "index": ...}}`.
- SLURM's `srun` sets `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_STEP_NODELIST` and
  `SLURM_STEP_TASKS_PER_NODE` in every task; TensorFlow's `SlurmClusterResolver` turns them into
  a cluster of workers (task k of a node listens on `port_base + k`; worker 0 is the chief), which
  `configure_cluster` writes to `TF_CONFIG`, so that everything after it reads one form.

Nothing here imports TensorFlow except the SLURM resolver, when it is used.
"""

import json
import os

from gmsop_keras.training.errors import UsageError
from pipelines.startup import load_tensorflow

# What srun sets in every task and SlurmClusterResolver reads (an sbatch script outside srun has
# only the job's variables, SLURM_JOB_ID, SLURM_NTASKS, SLURM_JOB_NODELIST).
SLURM_STEP_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
NO_CLUSTER = ("--strategy multi-worker needs a cluster: start every task with srun inside a SLURM job "
               "(the cluster is read from SLURM's variables), or set TF_CONFIG as Kubernetes' TFJob "
               "operator does; see docs/distributed.md")


def configure_cluster(port_base=8888, gpus_per_task=None, debug=False):
    """Makes `TF_CONFIG` describe this task's cluster; returns one line saying where it came from.

    `TF_CONFIG` set (a TFJob, or by hand): checked and kept. Absent, inside an `srun` job step:
    derived from SLURM's variables with `tf.distribute.cluster_resolver.SlurmClusterResolver`.

    Args:
        port_base: SLURM only: the port of the first task on each node (the next tasks take the
            following ports).
        gpus_per_task: SLURM only: assign this many of the node's GPUs to each task (task k of a
            node gets GPUs k*n .. k*n+n-1), as the resolver does. None or 0: leave the GPUs as
            srun binds them (one task per node sees all of the node's GPUs; with one task per GPU
            use `srun --gpus-per-task=1`).
        debug: show TensorFlow's start-up log (SLURM only: the resolver loads TensorFlow).

    Raises:
        UsageError: neither TF_CONFIG nor an srun job step, an invalid TF_CONFIG, a SLURM job
            without its step variables (the command was not started with srun), too few GPUs.
    """
    if "TF_CONFIG" in os.environ:
        config = tf_config()
        task = config["task"]
        return (f"multi-worker cluster from TF_CONFIG: {task['type']} {task['index']} of "
                f"{_describe(config['cluster'])}; chief: {_chief_name(config['cluster'])}")
    if "SLURM_JOB_ID" not in os.environ and "SLURM_PROCID" not in os.environ:
        raise UsageError(NO_CLUSTER)
    missing = [name for name in SLURM_STEP_VARIABLES if name not in os.environ]
    if missing:
        raise UsageError(f"SLURM job {os.environ.get('SLURM_JOB_ID', '?')} without a job step: {', '.join(missing)} "
                         "are set by srun; start the command with srun inside the batch script "
                         "(see docs/distributed.md)")
    config = slurm_tf_config(port_base, gpus_per_task, debug)
    os.environ["TF_CONFIG"] = json.dumps(config)
    task = config["task"]
    address = config["cluster"][task["type"]][task["index"]]
    return (f"multi-worker cluster from SLURM (job {os.environ.get('SLURM_JOB_ID', '?')}, step "
            f"{os.environ.get('SLURM_STEP_ID', '?')}): {task['type']} {task['index']} of "
            f"{_describe(config['cluster'])} at {address}; chief: {_chief_name(config['cluster'])}")


def slurm_tf_config(port_base=8888, gpus_per_task=None, debug=False):
    """The TF_CONFIG of this srun task, from `SlurmClusterResolver` (see `configure_cluster`)."""
    tf = load_tensorflow(debug)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        num_tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
        if gpus_per_task:
            # The resolver counts the node's GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi), gives
            # task k of the node GPUs k*n .. k*n+n-1 and writes them to CUDA_VISIBLE_DEVICES.
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=port_base, gpus_per_task=gpus_per_task, auto_set_gpu=True)
        else:
            # No GPU assignment: the resolver still needs a GPU count to lay out the tasks, and
            # with one "GPU" per task it lays them out without touching CUDA_VISIBLE_DEVICES.
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=port_base, gpus_per_node=num_tasks, gpus_per_task=1, auto_set_gpu=False)
        cluster = resolver.cluster_spec().as_dict()
    except (RuntimeError, ValueError, OSError) as error:
        raise UsageError(f"cannot derive the cluster from SLURM's variables: {' '.join(str(error).split())} "
                         "(check --slurm-gpus-per-task against the GPUs of a node)") from None
    task_type, task_id = resolver.get_task_info()
    if gpus_per_task:
        # The resolver's ids count the GPUs this process sees, as TensorFlow's list does.
        assigned = os.environ["CUDA_VISIBLE_DEVICES"]
        os.environ.pop("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        _show_only_gpus(tf, assigned)
    return {"cluster": cluster, "task": {"type": task_type, "index": task_id}}


def _show_only_gpus(tf, ids):
    """Makes TensorFlow use only the GPUs `ids` ("0,1") of those it found: TensorFlow listed its
    devices already, so the CUDA_VISIBLE_DEVICES the resolver wrote comes too late on its own."""
    gpus = tf.config.list_physical_devices("GPU")
    chosen = [int(i) for i in ids.split(",") if i.strip()]
    if any(i >= len(gpus) for i in chosen):
        raise UsageError(f"--slurm-gpus-per-task assigns GPUs {ids} to this task, but it sees {len(gpus)}; "
                         "lower --slurm-gpus-per-task or request more GPUs per node")
    tf.config.set_visible_devices([gpus[i] for i in chosen], "GPU")


def tf_config():
    """The parsed TF_CONFIG ({} when unset); one line naming the problem when it is not usable."""
    text = os.environ.get("TF_CONFIG", "") or ""
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON: {error}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise UsageError('TF_CONFIG needs "cluster" (e.g. {"chief": ["host0:2222"], "worker": ["host1:2222"]}) '
                         'and "task" (e.g. {"type": "worker", "index": 0})')
    index = task.setdefault("index", 0)
    if (task.get("type") not in cluster or not isinstance(index, int) or isinstance(index, bool)
            or not 0 <= index < len(cluster[task["type"]])):
        raise UsageError(f"TF_CONFIG's task {task} is not in its cluster {cluster}")
    return config


def num_workers():
    """The number of training tasks (chief and workers) in TF_CONFIG; 1 without a cluster."""
    cluster = tf_config().get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def check_shards(manifest, data_dir, splits=("train", "validation")):
    """Refuses a split with fewer shard files than there are workers in TF_CONFIG.

    Under MultiWorkerMirroredStrategy each worker reads a disjoint share of the shard files
    (`pipelines.make_dataset`'s FILE auto-shard policy): a worker without a file would have no data.
    """
    workers = num_workers()
    for split in splits:
        shards = len(manifest["splits"][split]["shards"])
        if shards < workers:
            raise UsageError(
                f"{data_dir}: the {split} split has {shards} shard file{'s' if shards != 1 else ''} for "
                f"{workers} workers, and each worker reads its own files; convert it again with "
                f"python -m pipelines.convert ... --min-shards {workers} (or more), or train on fewer workers")


def is_chief():
    """True unless TF_CONFIG names this process a task other than the chief (with no "chief" task
    in the cluster, worker 0 is the chief, as under SLURM)."""
    config = tf_config()
    task = config.get("task", {})
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in config["cluster"]


def task_model_dir(model_dir):
    """Where this process writes: `model_dir` for the chief, the scratch folder
    `model_dir/workers/<type>_<index>` for every other task (see `gmsop_keras.training.distribute`)."""
    if is_chief():
        return model_dir
    task = tf_config()["task"]
    return os.path.join(model_dir, "workers", f"{task['type']}_{task['index']}")


def _describe(cluster):
    total = sum(len(tasks) for tasks in cluster.values())
    return f"{total} tasks ({', '.join(f'{len(tasks)} {kind}' for kind, tasks in sorted(cluster.items()))})"


def _chief_name(cluster):
    return "chief 0" if "chief" in cluster else "worker 0"
