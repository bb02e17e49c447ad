"""Top-5 on 12 classes, where top-5 is not top-1 and is not everything: the metrics that
`build_and_compile` compiles into a model, and the evaluate command's own counting.

Every case ranks each label by hand (1 = the highest score) and the expected values are
counted by hand from those ranks. The ranks 1, 3, 5, 6 and 12 tell k = 5 from its
neighbours: k = 4 misses the 5th, k = 6 counts the 6th, and top-1 counts only the 1st.
"""

import json

import keras
import numpy as np
import pytest

from gmsop_keras.evaluate import main as evaluate_main
from gmsop_keras.serving.loading import topk_correct
from gmsop_keras.training.compile import build_and_compile
from gmsop_keras.cli.arguments import resolve_config

NUM_CLASSES = 12
INPUT_SHAPE = (16, 16, 3)
# Rank of each sample's label among its scores. Top-1 counts the two 1s: 2 of 8. Top-5 counts
# 1, 1, 3, 3 and 5: 5 of 8. (k = 3 or 4 would give 4 of 8, k = 6 gives 7 of 8.)
LABEL_RANKS = [1, 3, 6, 5, 1, 6, 12, 3]
TOP1, TOP5 = 2 / 8, 5 / 8
# Twelve distinct scores, highest first, with uneven gaps.
SCORES = np.array([4.0, 2.5, 2.2, 1.0, 0.7, 0.6, -0.1, -0.9, -1.0, -2.3, -3.0, -4.4], "float32")


def ranked_logits(ranks, seed=0):
    """(logits, labels): row i gives the 12 `SCORES` to a shuffled order of the classes, and its
    label is the class that received the `ranks[i]`-th highest score."""
    rng = np.random.default_rng(seed)
    logits = np.zeros((len(ranks), NUM_CLASSES), "float32")
    labels = np.zeros(len(ranks), "int64")
    for row, rank in enumerate(ranks):
        order = rng.permutation(NUM_CLASSES)  # order[j]: the class with the (j + 1)-th highest score
        logits[row, order] = SCORES
        labels[row] = order[rank - 1]
    return logits, labels


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_the_hand_built_case_ranks_each_label_as_stated():
    logits, labels = ranked_logits(LABEL_RANKS)
    # Rank = 1 + the number of classes scored higher than the label.
    ranks = 1 + (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert ranks.tolist() == LABEL_RANKS
    assert len(set(labels.tolist())) > 1  # the labels are not all one class


@pytest.fixture(scope="module")
def compiled_model(tmp_path_factory):
    """`build_and_compile` on the configuration `fit` resolves, for 12 classes (a GAP head: small)."""
    model_dir = tmp_path_factory.mktemp("top5") / "run"
    config = resolve_config(["--backbone", "resnet18", "--head", "gap", "--model-dir", str(model_dir)])
    return build_and_compile(config, INPUT_SHAPE, NUM_CLASSES, steps_per_epoch=1, jit_compile=False)


def test_compiled_metrics_on_hand_built_logits(compiled_model):
    logits, labels = ranked_logits(LABEL_RANKS)
    compiled_model.reset_metrics()
    result = compiled_model.compute_metrics(None, labels, logits)
    assert float(result["top1"]) == pytest.approx(TOP1)
    assert float(result["top5"]) == pytest.approx(TOP5)


def test_compiled_metrics_through_evaluate_of_the_model(compiled_model):
    """The model's own logits, set through its classifier: a zero kernel and the bias as the
    scores make every image's logits `SCORES` in a known class order, so each label's rank is
    fixed by which class it is."""
    classifier = compiled_model.layers[-1]
    assert isinstance(classifier, keras.layers.Dense) and classifier.units == NUM_CLASSES
    saved = [w.numpy() for w in classifier.weights]
    order = np.array([7, 2, 11, 0, 5, 9, 1, 3, 4, 6, 8, 10])  # order[j]: class with the (j + 1)-th score
    bias = np.zeros(NUM_CLASSES, "float32")
    bias[order] = SCORES
    try:
        classifier.kernel.assign(np.zeros(classifier.kernel.shape, "float32"))
        classifier.bias.assign(bias)
        images = np.random.default_rng(1).uniform(0, 255, (len(LABEL_RANKS),) + INPUT_SHAPE).astype("float32")
        labels = order[np.array(LABEL_RANKS) - 1]
        np.testing.assert_array_equal(compiled_model.predict(images, verbose=0), np.tile(bias, (len(labels), 1)))
        result = compiled_model.evaluate(images, labels, batch_size=3, verbose=0, return_dict=True)
    finally:
        for weight, value in zip(classifier.weights, saved):
            weight.assign(value)
    assert result["top1"] == pytest.approx(TOP1)
    assert result["top5"] == pytest.approx(TOP5)


def test_evaluate_counting_on_hand_built_probabilities():
    logits, labels = ranked_logits(LABEL_RANKS)
    assert topk_correct(softmax(logits), labels) == (2, 5)
    # Batch by batch, as the command counts: the first 3 rows (ranks 1, 3, 6), then the rest.
    assert topk_correct(softmax(logits[:3]), labels[:3]) == (1, 2)
    assert topk_correct(softmax(logits[3:]), labels[3:]) == (1, 3)


def test_evaluate_command_on_a_model_with_known_scores(tmp_path):
    """`python -m gmsop_keras.evaluate`'s main, end to end: a saved 12-class model whose logits
    are `SCORES` in a fixed class order for every image, on a 12-class synthetic set with two
    validation images per class. Top-1 is right for the images of 1 class of 12, top-5 for
    those of 5 classes of 12, whatever the images; batches of 5 split the 24 images unevenly."""
    import pipelines

    data_dir = str(pipelines.ensure_synthetic(
        str(tmp_path / "synthetic12"), num_classes=NUM_CLASSES, train_per_class=1, val_per_class=2,
        image_size=INPUT_SHAPE[0], min_shards=1))
    labels = np.concatenate([y.numpy() for _, y in pipelines.make_dataset(data_dir, "validation", 8, training=False)])
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES

    import gmsop_keras

    model = gmsop_keras.build_model("resnet18", "gap", num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE)
    classifier = model.layers[-1]
    order = np.array([3, 10, 0, 7, 5, 1, 11, 2, 9, 4, 8, 6])
    bias = np.zeros(NUM_CLASSES, "float32")
    bias[order] = SCORES
    classifier.kernel.assign(np.zeros(classifier.kernel.shape, "float32"))
    classifier.bias.assign(bias)
    model_path = str(tmp_path / "known_scores.keras")
    model.save(model_path)

    output = tmp_path / "result.json"
    assert evaluate_main([model_path, "--data-dir", data_dir, "--batch-size", "5", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["num_examples"] == 24
    assert result["top1_error"] == pytest.approx(1 - 2 / 24)  # class 3's 2 images
    assert result["top5_error"] == pytest.approx(1 - 10 / 24)  # classes 3, 10, 0, 7, 5: 10 images
