"""Where a saved model is: a run directory's `.keras` file, an export's newest complete version; and
the names an export writes. Nothing here imports TensorFlow, so the commands check paths first."""

from gmsop_keras.training.errors import UsageError
from pipelines import storage

SIGNATURE = "serving_default"
INPUT_NAME = "image"
TOP_K = 5
CLASS_NAMES_FILE = "class_names.txt"
PREPROCESSING_FILE = "preprocessing.json"


def resolve_model_path(path):
    """A `.keras` file, or a model dir's best.keras, else its final.keras.

    In a model dir on a URL (no rename there, `gmsop_keras.training.run_directory`) a model counts only with
    the file written after it: best.keras with best.json, final.keras with metrics.json.
    """
    if storage.isdir(path):
        markers = {"best.keras": "best.json", "final.keras": "metrics.json"}
        for name, marker in markers.items():
            if storage.isfile(storage.join(path, name)) and (
                    not storage.is_url(path) or storage.isfile(storage.join(path, marker))):
                return storage.join(path, name)
        raise UsageError(f"{path} holds neither a complete best.keras nor final.keras; train it to the end "
                         "of an epoch first, or pass a .keras file")
    if not storage.isfile(path):
        raise UsageError(f"model {path} not found")
    return path


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
