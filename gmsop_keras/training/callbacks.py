"""Callbacks of `fit`: checkpoints and the best model (`run_directory`), divergence, progress lines, logs,
and component usage over training (paper Fig. 2 left)."""

import csv
import io
import math
import sys
import time

import keras
import numpy as np

from gmsop_keras.layers import GatedMixture
from gmsop_keras.training.saved_config import write_config
from pipelines import storage


def gated_mixtures(model):
    """Every GatedMixture with a gate in `model` (searching nested models)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, GatedMixture) and layer.gate is not None:
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(gated_mixtures(layer))
    return found


def _finite_epoch(logs):
    """Whether an epoch ended with finite training and validation losses."""
    return all(math.isfinite(float(logs[key])) for key in ("loss", "val_loss") if key in (logs or {}))


class Checkpoint(keras.callbacks.Callback):
    """Saves the resumable state after every epoch (`RunDirectory.save_checkpoint`); never a diverged one."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        if _finite_epoch(logs):
            self.run.save_checkpoint(self.model, epoch + 1)


class SaveConfig(keras.callbacks.Callback):
    """Writes the run's config.yaml (`saved_config.write_config`) once this process has finished an
    epoch, before that epoch's checkpoint: a run that fails before its first epoch ends (data that
    is not what its manifest says, a loss that diverges at once, a kill) leaves no configuration
    that would refuse the corrected command as a different run."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.written = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.written and _finite_epoch(logs):
            write_config(self.config)
            self.written = True


class BestModel(keras.callbacks.Callback):
    """Keeps `best.keras`: replaced only by an epoch strictly better than every epoch before,
    including those of earlier processes of the same run (the value is read from `best.json`).

    Args:
        run: the `RunDirectory`.
        monitor: a log key to maximise (default `val_top1`).
    """

    def __init__(self, run, monitor="val_top1"):
        super().__init__()
        self.run = run
        self.monitor = monitor
        self.best = None

    def on_train_begin(self, logs=None):
        self.best = self.run.best_value()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not _finite_epoch(logs):
            return
        value = float(value)
        if self.best is None or value > self.best:
            self.run.save_best(self.model, epoch + 1, self.monitor, value)
            self.best = value


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and records where (`epoch`, `step`, counted from 1)."""

    def __init__(self):
        super().__init__()
        self.diverged = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.diverged is None:
            self.diverged = {"epoch": self._epoch, "step": batch + 1, "loss": float(loss)}
            self.model.stop_training = True


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with epochs counted from 1, as in the progress bar and component_usage.csv.

    Keras' writer rows go to a buffer that is added to the file after each epoch through
    `pipelines.storage`, so the file may be a URL (Keras 3.15's own logger fails on one).
    """

    def on_train_begin(self, logs=None):
        if not (self.append and storage.exists(self.filename)):
            storage.write_text(self.filename, "")
        self.append_header = not storage.read_text(self.filename)
        self.csv_file = io.StringIO(newline="")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)
        storage.append_text(self.filename, self.csv_file.getvalue())
        self.csv_file.seek(0)
        self.csv_file.truncate()


class ProgressLines(keras.callbacks.Callback):
    """A progress line every `every` steps, for logs that are not a terminal (Keras' bar needs one).

    Args:
        every: steps between lines.
        epochs: the run's total epochs, for "epoch 3/40".
        steps: steps per epoch.
        batch_size: global batch size, for images per second.
        stream: where to print (default stdout).
    """

    def __init__(self, every, epochs, steps, batch_size, stream=None):
        super().__init__()
        self.every, self.epochs, self.steps, self.batch_size = every, epochs, steps, batch_size
        self.stream = stream or sys.stdout
        self._epoch = 0
        self._since = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._since = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every and step != self.steps:
            return
        rate = step * self.batch_size / max(time.perf_counter() - self._since, 1e-9)
        values = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
        print(f"epoch {self._epoch}/{self.epochs} step {step}/{self.steps}: {values} ({rate:.0f} img/s)",
              file=self.stream, flush=True)


class ComponentUsage(keras.callbacks.Callback):
    """Per epoch: samples routed to each component, to CSV, a PNG bar chart and TensorBoard.

    Reads the `routing_counts` that every gated `GatedMixture` accumulates while
    training, and resets them when an epoch begins. A balance loss that works
    shows as even bars; without it (alpha = 0) a few components take almost
    every sample.

    Args:
        directory: where `component_usage.csv` and `component_usage/epoch_NNN.png` go.
        tensorboard_dir: if given, the counts are also written there as a histogram
            and the chart as an image.
    """

    def __init__(self, directory, tensorboard_dir=None):
        super().__init__()
        self.directory = directory
        self.tensorboard_dir = tensorboard_dir
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        for layer in gated_mixtures(self.model):
            layer.routing_counts.assign(np.zeros(layer.num_components, dtype="float32"))

    def on_epoch_end(self, epoch, logs=None):
        layers = gated_mixtures(self.model)
        if not layers:
            return
        storage.makedirs(storage.join(self.directory, "component_usage"))
        for layer in layers:
            counts = np.asarray(keras.ops.convert_to_numpy(layer.routing_counts.value)).round().astype(int)
            self.history.append((epoch + 1, layer.name, counts))
            self._append_csv(epoch + 1, layer.name, counts)
            png = storage.join(self.directory, "component_usage", f"epoch_{epoch + 1:03d}_{layer.name}.png")
            plot_usage(counts, f"{layer.name}, epoch {epoch + 1}", png)
            if self.tensorboard_dir:
                self._to_tensorboard(epoch + 1, layer.name, counts, png)

    def _append_csv(self, epoch, name, counts):
        path = storage.join(self.directory, "component_usage.csv")
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        if not storage.exists(path):
            writer.writerow(["epoch", "layer"] + [f"component_{i + 1}" for i in range(len(counts))])
        writer.writerow([epoch, name] + counts.tolist())
        storage.append_text(path, text.getvalue())

    def _to_tensorboard(self, epoch, name, counts, png):
        import tensorflow as tf

        writer = tf.summary.create_file_writer(storage.join(self.tensorboard_dir, "component_usage"))
        with writer.as_default():
            tf.summary.histogram(f"{name}/samples_per_component", np.repeat(np.arange(len(counts)), counts), step=epoch)
            image = tf.io.decode_png(tf.io.read_file(png), channels=4)[None]
            tf.summary.image(f"{name}/usage", image, step=epoch)
        writer.close()


class ComponentCountsReader(ComponentUsage):
    """`ComponentUsage` of a worker that is not the chief under MultiWorkerMirroredStrategy: it
    reads and resets the counts as the chief does (summing them over the workers is a collective
    operation that every worker must join) and writes nothing."""

    def on_epoch_end(self, epoch, logs=None):
        for layer in gated_mixtures(self.model):
            keras.ops.convert_to_numpy(layer.routing_counts.value)


def plot_usage(counts, title, path):
    """Bar chart of samples per component, like the paper's Fig. 2 (left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(np.arange(1, len(counts) + 1), counts, color="#4477aa")
    ax.axhline(np.mean(counts), color="#cc6677", linestyle="--", linewidth=1, label="even load")
    ax.set_xlabel("component")
    ax.set_ylabel("samples received")
    ax.set_xticks(np.arange(1, len(counts) + 1))
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    storage.write_bytes(path, image.getvalue())
