"""Component usage over training (paper Fig. 2 left): how many samples each component received."""

import csv
import os

import keras
import numpy as np

from gmsop_keras.layers import GatedMixture


def gated_mixtures(model):
    """Every GatedMixture with a gate in `model` (searching nested models)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, GatedMixture) and layer.gate is not None:
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(gated_mixtures(layer))
    return found


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
        os.makedirs(os.path.join(self.directory, "component_usage"), exist_ok=True)
        for layer in layers:
            counts = np.asarray(keras.ops.convert_to_numpy(layer.routing_counts.value)).round().astype(int)
            self.history.append((epoch + 1, layer.name, counts))
            self._append_csv(epoch + 1, layer.name, counts)
            png = os.path.join(self.directory, "component_usage", f"epoch_{epoch + 1:03d}_{layer.name}.png")
            plot_usage(counts, f"{layer.name}, epoch {epoch + 1}", png)
            if self.tensorboard_dir:
                self._to_tensorboard(epoch + 1, layer.name, counts, png)

    def _append_csv(self, epoch, name, counts):
        path = os.path.join(self.directory, "component_usage.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["epoch", "layer"] + [f"component_{i}" for i in range(len(counts))])
            writer.writerow([epoch, name] + counts.tolist())

    def _to_tensorboard(self, epoch, name, counts, png):
        import tensorflow as tf

        writer = tf.summary.create_file_writer(os.path.join(self.tensorboard_dir, "component_usage"))
        with writer.as_default():
            tf.summary.histogram(f"{name}/samples_per_component", np.repeat(np.arange(len(counts)), counts), step=epoch)
            image = tf.io.decode_png(tf.io.read_file(png), channels=4)[None]
            tf.summary.image(f"{name}/usage", image, step=epoch)
        writer.close()


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
    fig.savefig(path + ".tmp.png")
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
