"""The data hookup: which manifest a model directory's run was trained on (`find_manifest`)."""

import pipelines
from gmsop_keras.training.data import find_manifest

TINY = dict(num_classes=3, train_per_class=4, val_per_class=2, image_size=8, min_shards=1, workers=1)


def test_find_manifest_reads_the_data_dir_or_the_one_the_saved_config_names(tmp_path):
    data = str(tmp_path / "data")
    pipelines.ensure_synthetic(data, **TINY)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    assert find_manifest(data, str(model_dir))["num_classes"] == 3
    assert find_manifest(None, str(model_dir)) is None  # no config.yaml
    (model_dir / "config.yaml").write_text(f"dataset: folder\ndata_dir: {tmp_path / 'gone'}\n")
    assert find_manifest(None, str(model_dir)) is None  # a data dir that no longer exists
    (model_dir / "config.yaml").write_text(f"dataset: folder\ndata_dir: {data}\n")
    assert find_manifest(None, str(model_dir)) == pipelines.read_manifest(data)
