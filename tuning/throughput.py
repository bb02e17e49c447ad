"""Training speed in images per second (the paper's FPS, Fig. 3 right)."""

import time

import keras


class TrainingThroughput(keras.callbacks.Callback):
    """Adds `images_per_second` (training) to the logs at the end of every epoch.

    Each training step is timed from `on_train_batch_begin` to
    `on_train_batch_end`. With one step per execution Keras fetches the batch
    inside the step, so input time counts while validation and the other
    callbacks do not. The first step of a run traces and compiles the step
    function and is left out. The value is the running mean over the run so
    far (images / seconds); epochs with no timed step yet log nothing.

    Args:
        batch_size: global batch size (all replicas): images per step.
    """

    def __init__(self, batch_size):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive. Received: batch_size={batch_size}")
        self.batch_size = batch_size
        self.images = 0
        self.seconds = 0.0
        self._start = None
        self._first = True

    def on_train_begin(self, logs=None):
        self.images, self.seconds, self._first = 0, 0.0, True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Keras hands this callback Python floats, so the step has finished by now.
        elapsed = time.perf_counter() - self._start
        if self._first:
            self._first = False
            return
        self.images += self.batch_size
        self.seconds += elapsed

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.seconds > 0:
            logs["images_per_second"] = self.images / self.seconds
