"""Loading TensorFlow for a command without its start-up noise.

Shared by every command of the project (`pipelines.convert`, `gmsop_keras.fit`, ...); it lives
here because `pipelines` must not import `gmsop_keras` (data flows one way).
"""

import os
import sys
import tempfile

# Lines TensorFlow writes to stderr while it loads and finds its devices, which say nothing
# the user can act on. Any other line (a real error) is passed through.
_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
    "Unable to register cu",  # cuDNN / cuFFT / cuBLAS factories registered twice
    "computation placer already registered",
    "TF-TRT Warning",
)


def load_tensorflow(debug=False):
    """Imports TensorFlow and finds its devices, keeping its start-up noise off stderr.

    TensorFlow writes those lines from C++ before its logging is configured, so
    `TF_CPP_MIN_LOG_LEVEL` cannot hide them all: stderr is captured at the file-descriptor
    level while TensorFlow loads, and every line that is not known noise is written back.
    `debug=True` (a command's `--debug`) shows everything. Does nothing once TensorFlow is
    loaded. Returns the `tensorflow` module.
    """
    if "tensorflow" in sys.modules or debug:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # initialises CUDA: its failure message goes here too
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not any(n in line for n in _NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tf
