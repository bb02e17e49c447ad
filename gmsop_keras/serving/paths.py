"""Where a saved model is: a run directory's `.keras` file (passing over a damaged one), an export's newest
complete version, the dataset a run was trained on; and the names an export writes. Nothing here imports
TensorFlow, so the commands check paths first."""

import sys
import zipfile
import zlib

import yaml

from gmsop_keras.training.data import named_data_dir
from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.saved_config import CONFIG_FILE, read_saved_config
from pipelines import storage

SIGNATURE = "serving_default"
INPUT_NAME = "image"
TOP_K = 5
CLASS_NAMES_FILE = "class_names.txt"
PREPROCESSING_FILE = "preprocessing.json"
# A model dir's models in the order they are preferred, each with the file written after it.
RUN_MODELS = (("best.keras", "best.json"), ("final.keras", "metrics.json"))
RETRAIN = "retrain the model (python -m gmsop_keras.fit), or pass an intact .keras file"


def resolve_model_path(path, damaged=None):
    """A `.keras` file, or a model dir's best.keras, else its final.keras: the first that is usable.

    A file is passed over when it is missing, incomplete or damaged (`keras_file_damage`, or listed in
    `damaged`, {file: cause}, by a load that failed); a damaged file passed over is named on stderr in
    one `warning: FILE is damaged (CAUSE); using OTHER` line. In a model dir on a URL (no rename there,
    `gmsop_keras.training.run_directory`) a model counts only with the file written after it: best.keras
    with best.json, final.keras with metrics.json.

    Raises:
        UsageError: nothing usable, each file named with what is wrong with it.
    """
    damaged = damaged or {}
    if storage.isdir(path):
        candidates = [(storage.join(path, name), marker) for name, marker in RUN_MODELS]
    elif storage.isfile(path):
        candidates = [(path, None)]
    else:
        raise UsageError(f"model {path} not found")
    problems = []
    for file, marker in candidates:
        problem = (f"damaged ({damaged[file]})" if file in damaged
                   else _problem(file, marker if storage.is_url(path) else None))
        if problem is None:
            for other, why in problems:
                if why.startswith("damaged"):
                    print(f"warning: {other} is {why}; using {file}", file=sys.stderr, flush=True)
            return file
        problems.append((file, problem))
    if not any(why.startswith("damaged") for _, why in problems):
        raise UsageError(f"{path} holds neither a complete best.keras nor final.keras; train it to the end "
                         "of an epoch first, or pass a .keras file")
    raise UsageError(" and ".join(f"{file} is {why}" for file, why in problems) + f"; {RETRAIN}")


def _problem(file, marker):
    if not storage.isfile(file):
        return "missing"
    if marker and not storage.isfile(storage.join(storage.dirname(file), marker)):
        return f"incomplete (no {marker}: its write did not finish)"
    cause = keras_file_damage(file)
    return cause and f"damaged ({cause})"


def keras_file_damage(path):
    """Why the `.keras` file at `path` cannot be a saved model, found without Keras; None when its zip reads.

    An empty file, a file that is not a zip, a truncated zip (the end of its central directory is
    gone), a member whose bytes fail their CRC (local files only: that reads the whole file), a zip
    without the `config.json` Keras writes. Files of other suffixes (legacy `.h5`) are not checked.
    """
    if not path.endswith(".keras"):
        return None
    size = storage.size(path)
    if size == 0:
        return "empty file"
    try:
        with storage.open_file(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return f"not a zip file ({size} bytes that do not start as one)"
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                names = archive.namelist()
                bad = None if storage.is_url(path) else archive.testzip()
    except zipfile.BadZipFile:
        return f"truncated zip: {size} bytes, no end of central directory"
    except (EOFError, OSError, ValueError, zlib.error) as error:
        return f"truncated zip: {' '.join(str(error).split())[:200]}"
    if bad is not None:
        return f"zip member {bad} fails its CRC check"
    if "config.json" not in names:
        return "a zip without config.json, not a Keras model file"
    return None


def run_data_dir(model_path):
    """(data dir, config.yaml) of the run whose model dir holds `model_path` (a model dir or a file in one),
    as `fit` located it (`gmsop_keras.training.data.locate_data`); None without a readable config.yaml."""
    model_dir = model_path if storage.isdir(model_path) else storage.dirname(model_path)
    try:
        config = read_saved_config(model_dir)
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), str):
        return None
    data_dir = named_data_dir(config) or config["dataset"]
    return data_dir, storage.join(model_dir, CONFIG_FILE)


def model_kind(path):
    """"export" for a SavedModel or a folder of numbered versions of one; "keras" for a `.keras` file or a
    model dir (a run's best.keras, final.keras or config.yaml); checked without TensorFlow.

    Raises:
        UsageError: `path` does not exist, or holds neither.
    """
    where = ("pass a run directory or .keras file of python -m gmsop_keras.fit, or an export of "
             "python -m gmsop_keras.export")
    if storage.isfile(storage.join(path, "saved_model.pb")):
        return "export"
    if storage.isfile(path):
        return "keras"
    if not storage.isdir(path):
        raise UsageError(f"model {path} not found; {where}")
    names = storage.listdir(path)
    if any(name in names for name, _ in RUN_MODELS) or CONFIG_FILE in names:
        return "keras"
    if "variables" in names or any(name.isascii() and name.isdigit() for name in names):
        return "export"
    raise UsageError(f"{path} holds no model (no best.keras or final.keras of a run, no saved_model.pb or "
                     f"numbered versions of an export); {where}")


def resolve_saved_model(path):
    """`path` if it holds a SavedModel, else its newest complete integer-named version folder.

    A version is complete once its `saved_model.pb` exists (written last, `gmsop_keras.export`).
    """
    if storage.isfile(storage.join(path, "saved_model.pb")):
        return path
    if not storage.isdir(path):
        raise UsageError(f"SavedModel {path} not found")
    names = storage.listdir(path)
    if storage.basename(path).isdigit() and "variables" in names:
        raise UsageError(f"{path} is an incomplete export (no saved_model.pb: the export was interrupted); "
                         "export the model again, or pass the folder of its versions to use the newest complete one")
    versions = sorted((int(name) for name in names
                       if name.isascii() and name.isdigit() and storage.isfile(storage.join(path, name, "saved_model.pb"))))
    if not versions:
        raise UsageError(f"{path} holds no SavedModel (saved_model.pb) nor numbered versions of one")
    return storage.join(path, str(versions[-1]))
