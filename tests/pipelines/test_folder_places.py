"""Image trees: `folder` and the Places365 release layouts, resizing, class names, bad images."""

import collections
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import DataError, read_manifest
from pipelines.convert import main as convert
from pipelines.folder import folder_source, load_image
from pipelines.places365 import places365_source
from pipelines.resize import resize_images

OPTS = ["--workers", "2", "--min-shards", "2", "--no-progress"]


def save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def random_image(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_folder_round_trip_with_resize(tmp_path, read_all):
    rng = np.random.default_rng(1)
    expected = []
    for label, cls in enumerate(["ant", "bee", "cow"]):  # sorted folder names are the classes
        for i, shape in enumerate([(12, 10, 3), (20, 20, 3), (12, 10, 3)]):
            image = save(str(tmp_path / "tree" / cls / f"{i}.png"), random_image(rng, shape))
            expected.append((resize_images(image[None], (8, 6))[0], label))
    grey = save(str(tmp_path / "tree" / "bee" / "sub" / "grey.png"), random_image(rng, (9, 9)))
    expected.append((resize_images(np.repeat(grey[:, :, None], 3, 2)[None], (8, 6))[0], 1))
    rgba = save(str(tmp_path / "tree" / "cow" / "alpha.png"), random_image(rng, (8, 6, 4)))
    expected.append((rgba[:, :, :3], 2))
    (tmp_path / "tree" / "cow" / "notes.txt").write_text("not an image, ignored")
    out = str(tmp_path / "out")
    tree = str(tmp_path / "tree")
    assert convert(["folder", "--source", tree, "--size", "8x6", "--output", out, *OPTS]) == 0
    images, labels = read_all(out, "train")
    assert images.shape == (11, 8, 6, 3)
    got = collections.Counter((im.tobytes(), int(lab)) for im, lab in zip(images, labels))
    assert got == collections.Counter((im.tobytes(), lab) for im, lab in expected)
    manifest = read_manifest(out)
    assert manifest["class_names"] == ["ant", "bee", "cow"] and manifest["dataset"] == "folder"
    assert list(manifest["splits"]) == ["train"]


def test_train_val_folders_and_held_out_fraction(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(4):
                save(str(tmp_path / "tv" / split / cls / f"{i}.png"), random_image(rng, (4, 4, 3)))
    source = folder_source(str(tmp_path / "tv"), (4, 4))
    assert {k: s.num_examples for k, s in source.splits.items()} == {"train": 8, "validation": 8}
    save(str(tmp_path / "tv" / "val" / "zebra" / "0.png"), random_image(rng, (4, 4, 3)))
    with pytest.raises(DataError, match=r"class folders \['zebra'\] are not among the training classes"):
        folder_source(str(tmp_path / "tv"), (4, 4))
    held = folder_source(str(tmp_path / "tv" / "train"), (4, 4), validation_fraction=0.25)
    assert {k: s.num_examples for k, s in held.splits.items()} == {"train": 6, "validation": 2}
    labels = held.splits["validation"].read(0, 2).labels
    assert sorted(labels.tolist()) == [0, 1]  # stratified: one per class


def test_unreadable_image(tmp_path):
    rng = np.random.default_rng(3)
    save(str(tmp_path / "t" / "a" / "ok.png"), random_image(rng, (4, 4, 3)))
    good = random_image(rng, (40, 40, 3))
    save(str(tmp_path / "t" / "a" / "cut.png"), good)
    data = (tmp_path / "t" / "a" / "cut.png").read_bytes()
    (tmp_path / "t" / "a" / "cut.png").write_bytes(data[:len(data) // 2])  # truncated
    with pytest.raises(DataError, match="cut.png: unreadable image"):
        load_image(str(tmp_path / "t" / "a" / "cut.png"))
    source = folder_source(str(tmp_path / "t"), (4, 4), skip_bad=True)
    examples = source.splits["train"].read(0, 2)
    assert len(examples.labels) == 1 and len(examples.skipped) == 1 and "cut.png" in examples.skipped[0]
    strict = folder_source(str(tmp_path / "t"), (4, 4))
    with pytest.raises(DataError, match="cut.png: unreadable image .*--skip-bad"):
        strict.splits["train"].read(0, 2)


def places_release(root, rng):
    """The official layout: lists, categories, data_256/ and val_256/ (JPEG images)."""
    (root / "filelist").mkdir(parents=True)
    categories = "/a/airfield 0\n/b/bakery/shop 1\n/c/canyon 2\n"
    (root / "filelist" / "categories_places365.txt").write_text(categories)
    train = [("/a/airfield/00000001.jpg", 0), ("/b/bakery/shop/00000001.jpg", 1),
             ("/c/canyon/00000007.jpg", 2)]
    val = [("Places365_val_00000001.jpg", 2), ("Places365_val_00000002.jpg", 0)]
    (root / "filelist" / "places365_train_standard.txt").write_text("".join(f"{p} {l}\n" for p, l in train))
    (root / "filelist" / "places365_val.txt").write_text("".join(f"{p} {l}\n" for p, l in val))
    for folder, entries in (("data_256", train), ("val_256", val)):
        for path, _ in entries:
            save(str(root / folder / path.lstrip("/")), random_image(rng, (256, 256, 3)))
    return train, val


def test_places365_official_lists(tmp_path, read_all):
    train, val = places_release(tmp_path / "places", np.random.default_rng(4))
    out = str(tmp_path / "out")
    assert convert(["places365", "--source", str(tmp_path / "places"), "--output", out, *OPTS]) == 0
    manifest = read_manifest(out)
    assert manifest["class_names"] == ["airfield", "bakery/shop", "canyon"] and manifest["num_classes"] == 3
    assert manifest["image_shape"] == [100, 100, 3] and manifest["dataset"] == "places365"
    images, labels = read_all(out, "validation", crop_size=None)
    originals = np.stack([load_image(str(tmp_path / "places" / "val_256" / p)) for p, _ in val])
    np.testing.assert_array_equal(images, resize_images(originals, (100, 100)))
    np.testing.assert_array_equal(labels, [2, 0])
    images, _ = read_all(out, "validation")  # evaluation centre-crops 96x96 for places365
    assert images.shape == (2, 96, 96, 3)


def test_places365_list_errors(tmp_path):
    places_release(tmp_path / "p", np.random.default_rng(5))
    with open(tmp_path / "p" / "filelist" / "places365_val.txt", "a") as f:
        f.write("Places365_val_00000003.jpg 3\n")
    with pytest.raises(DataError, match=r"places365_val.txt:3: label 3 is out of range 0..2"):
        places365_source(str(tmp_path / "p"))
    places_release(tmp_path / "q", np.random.default_rng(5))
    os.rename(tmp_path / "q" / "data_256", tmp_path / "q" / "elsewhere")
    assert places365_source(str(tmp_path / "q")).splits["train"].num_examples == 3  # found in a subfolder
    shutil.rmtree(tmp_path / "q" / "elsewhere")
    with pytest.raises(DataError, match="cannot find its first image a/airfield/00000001.jpg"):
        places365_source(str(tmp_path / "q"))


def test_places365_class_folders(tmp_path):
    rng = np.random.default_rng(6)
    for split in ("train", "val"):
        for cls in ("airfield", "canyon"):
            save(str(tmp_path / "easy" / split / cls / "1.jpg"), random_image(rng, (256, 256, 3)))
    source = places365_source(str(tmp_path / "easy"))
    assert source.dataset == "places365" and source.class_names == ["airfield", "canyon"]
    assert source.image_shape == (100, 100, 3)
    assert source.splits["validation"].read(0, 2).images.shape == (2, 100, 100, 3)


def test_empty_class_folders_are_refused_naming_them(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    save(str(root / "cat" / "a.png"), random_image(rng, (20, 20, 3)))
    (root / "dog").mkdir()
    (root / "eel" / "deeper").mkdir(parents=True)
    (root / "eel" / "notes.txt").write_text("no images here")
    result = run_cli("folder", "--source", root, "--size", "16", "--output", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {root / 'dog'}, {root / 'eel'}: class folders without image files "
        "(.jpg, .jpeg, .png, .bmp, .gif, .webp, .tif, .tiff, .ppm); add images or delete the folder")
    assert not (tmp_path / "out" / "manifest.json").exists()
