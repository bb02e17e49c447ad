"""Reading a PyTorch checkpoint (`.pth`, `.pth.tar`) into a name -> numpy array `state_dict`.

Needs torch (an optional dependency) only to read the file; nothing here imports TensorFlow or
Keras, so the converter checks its checkpoint before TensorFlow loads.
"""

import numpy as np

from gmsop_keras.training.errors import UsageError
from pipelines import storage

WRAPPER_KEYS = ("state_dict", "model")
PREFIXES = ("module.",)
TORCH_MISSING = "reading a PyTorch checkpoint needs torch: pip install torch==2.13.0 (or pip install torch)"


def read_checkpoint(path, weights_only=True):
    """The name -> float32 numpy array `state_dict` of a `.pth` file, unwrapped.

    `weights_only=True` (the default) lets `torch.load` read tensors and plain
    containers only, never arbitrary pickled objects.
    """
    check_checkpoint_file(path)
    try:
        import torch  # noqa: PLC0415  (an optional dependency, needed only here)
    except ImportError as error:
        raise UsageError(TORCH_MISSING) from error
    try:
        with storage.local_path(path) as local:
            checkpoint = torch.load(local, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises several types for unreadable or unsafe files
        if weights_only and "weights_only" in str(error):
            raise UsageError(f"cannot read {path} as a PyTorch checkpoint: {_first_line(error)} (pass "
                             "--unsafe-load for a checkpoint you trust that pickles other objects)") from error
        raise UsageError(f"cannot read {path} as a PyTorch checkpoint ({_first_line(error)}): it is not one, "
                         "or it is cut short; save or download it again") from error
    state = unwrap_state_dict(checkpoint)
    return {
        name: value.detach().cpu().float().numpy() if hasattr(value, "detach") else np.asarray(value)
        for name, value in state.items()
    }


def check_checkpoint_file(path):
    """Refuses a missing file, a folder and an empty file, naming it, before torch is loaded."""
    if storage.isdir(path):
        raise UsageError(f"checkpoint {path} is a folder; pass the .pth file in it")
    if not storage.isfile(path):
        raise UsageError(f"checkpoint not found: {path}")
    if storage.size(path) == 0:
        raise UsageError(f"checkpoint {path} is empty (0 bytes): it was cut short; save or download it again")


def _first_line(error):
    """The first sentence of an error's message, or its type where the message is empty."""
    if isinstance(error, KeyError):  # pickle's KeyError '101': a byte that is no pickle opcode
        return "not a pickle"
    lines = str(error).strip().splitlines()
    return lines[0].split(". ")[0] if lines else type(error).__name__


class CheckpointMismatchError(ValueError):
    """A state_dict whose tensors do not match the model's weights one to one."""


def unwrap_state_dict(checkpoint):
    """The name -> tensor mapping of a checkpoint, without `module.` prefixes.

    Accepts a plain `state_dict` or one wrapped as `{"state_dict": ...}` (the
    authors' training scripts) or `{"model": ...}`; strips the `module.`
    prefixes of `DataParallel`.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f"A checkpoint must be a state_dict (a dict of tensors). Received: {type(checkpoint).__name__}"
        )
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {}
    for name, value in checkpoint.items():
        for prefix in PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix) :]
        state[name] = value
    return state
