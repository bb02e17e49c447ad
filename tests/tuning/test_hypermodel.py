"""GMSOPHyperModel, the studies' search spaces, and the throughput callback."""

import keras
import keras_tuner
import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.training.callbacks import gated_mixtures
from gmsop_keras.cli.arguments import resolve_config
from tuning.hypermodel import GMSOPHyperModel
from tuning.studies import PAPER_K, PAPER_N, STUDIES, nk_pairs, parse_nk, search_space
from tuning.throughput import TrainingThroughput


def make_hypermodel(head="gm-gap-16-4", **flags):
    argv = ["--head", head, "--batch-size", "8", "--lr", "0.02", "--seed", "3"]
    for key, value in flags.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    config = resolve_config(argv)
    return GMSOPHyperModel(config, (16, 16, 3), num_classes=5, steps_per_epoch=4)


def test_nk_pairs_keep_only_k_at_most_n_in_order():
    assert nk_pairs((4, 16), (2, 8)) == ["4-2", "16-2", "16-8"]
    pairs = nk_pairs()
    assert len(pairs) == 3 + 4 + 5 + 5  # the paper's Fig. 3 grid: K <= N
    assert all(k <= n for n, k in map(parse_nk, pairs))
    assert [parse_nk(p) for p in pairs] == sorted(parse_nk(p) for p in pairs)
    assert set(map(parse_nk, pairs)) == {(n, k) for n in PAPER_N for k in PAPER_K if k <= n}


@pytest.mark.parametrize("ns, ks, message", [((2,), (4, 8), "no pair has K <= N"),
                                              ((0, 4), (1,), "positive integers"),
                                              ((), (1,), "positive integers")])
def test_nk_pairs_reject_impossible_grids(ns, ks, message):
    with pytest.raises(ValueError, match=message):
        nk_pairs(ns, ks)


def test_grid_spaces_are_the_papers():
    alpha = STUDIES["alpha"]
    space = search_space(alpha["head_family"], alpha["num_components"], alpha["top_k"], 0.075, alphas=alpha["alphas"])
    values = {hp.name: hp for hp in space.space}
    assert values["balance_loss_weight"].values == [0.0, 1.0, 10.0, 100.0, 1000.0]
    assert space.values == {"head_family": "gm-gap", "nk": "16-4", "balance_loss_weight": 0.0, "lr": 0.075}
    nk = STUDIES["nk"]
    space = search_space(nk["head_family"], nk["num_components"], nk["top_k"], 0.075, alphas=nk["alphas"])
    values = {hp.name: hp for hp in space.space}
    assert values["nk"].values == nk_pairs(PAPER_N, PAPER_K)
    assert space.values["balance_loss_weight"] == 100.0 and space.values["lr"] == 0.075


def test_free_space_has_ranges_with_defaults_inside():
    space = search_space("gm-sop", (8, 16), (4, 8), 0.1, alpha_range=(1, 1000), lr_range=(0.025, 0.4))
    values = {hp.name: hp for hp in space.space}
    assert values["balance_loss_weight"].sampling == "log" and space.values["balance_loss_weight"] == 100.0
    assert values["lr"].min_value == 0.025 and values["lr"].max_value == 0.4 and space.values["lr"] == 0.1
    assert values["nk"].values == ["8-4", "8-8", "16-4", "16-8"]
    with pytest.raises(ValueError, match="alpha_range"):
        search_space("gm-gap", (4,), (2,), 0.1, alpha_range=(10, 1))
    with pytest.raises(ValueError, match="exactly one"):
        search_space("gm-gap", (4,), (2,), 0.1, alphas=(1,), alpha_range=(1, 10))


def test_build_declares_flat_hyperparameters_with_the_configs_defaults():
    hypermodel = make_hypermodel("gm-gap-16-4", balance_loss_weight=7)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values == {"head_family": "gm-gap", "nk": "16-4", "balance_loss_weight": 7.0, "lr": 0.02}
    (mixture,) = gated_mixtures(model)
    assert (mixture.num_components, mixture.top_k, mixture.balance_loss_weight) == (16, 4, 7.0)


def test_build_composes_build_model_and_fits_compile():
    hypermodel = make_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_family", "gm-sop")
    hp.Fixed("nk", "4-2")
    hp.Fixed("balance_loss_weight", 10.0)
    hp.Fixed("lr", 0.3)
    model = hypermodel.build(hp)
    reference = build_model("resnet18", "gm-sop-4-2", num_classes=5, input_shape=(16, 16, 3))
    assert model.count_params() == reference.count_params()
    assert [w.shape for w in model.weights if "mixture" in w.path] == \
        [w.shape for w in reference.weights if "mixture" in w.path]
    (mixture,) = gated_mixtures(model)
    assert (mixture.num_components, mixture.top_k, mixture.balance_loss_weight) == (4, 2, 10.0)
    # fit's optimizer: SGD with momentum, lr from the hyperparameter; top-1/top-5 metrics.
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.momentum == 0.9
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.3)
    assert model.optimizer.built  # so a Hyperband checkpoint restores momentum and the schedule's step


def test_k_above_n_fails_the_trial_with_a_reason():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("nk", "4-8")
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=r"top_k \(K=8\) must be <= num_components \(N=4\)"):
        make_hypermodel().build(hp)


def test_a_head_without_a_gate_is_refused():
    with pytest.raises(ValueError, match="gated mixture"):
        make_hypermodel("ave-gap-4")


def test_hypermodel_fit_trains_as_fit_and_logs_images_per_second():
    hypermodel = make_hypermodel("gm-gap-4-2")
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3)).astype("float32")
    history = hypermodel.fit(hp, model, images, np.arange(32) % 5, batch_size=8, epochs=2, verbose=0)
    assert {"loss", "top1", "top5"} <= set(history.history)
    speeds = history.history["images_per_second"]
    assert len(speeds) == 2 and all(s > 0 for s in speeds)


def test_throughput_skips_the_first_step_and_counts_the_rest():
    callback = TrainingThroughput(batch_size=4)
    callback.on_train_begin()
    logs = {}
    for batch in range(3):
        callback.on_train_batch_begin(batch)
        callback.on_train_batch_end(batch, {})
    callback.on_epoch_end(0, logs)
    assert callback.images == 8 and logs["images_per_second"] == pytest.approx(8 / callback.seconds)
    lonely = TrainingThroughput(batch_size=4)
    lonely.on_train_begin()
    lonely.on_train_batch_begin(0)
    lonely.on_train_batch_end(0, {})
    logs = {}
    lonely.on_epoch_end(0, logs)
    assert "images_per_second" not in logs  # only the tracing step: nothing honest to report
    with pytest.raises(ValueError, match="batch_size"):
        TrainingThroughput(0)


def test_a_trial_gets_its_heads_preset_switches_and_the_datasets_statistics():
    from tuning.hypermodel import _for_head

    config = resolve_config(["--preset", "official", "--head", "gm-gap-4-2"])
    assert config["num_iterations"] is None and config["gate_init"] == "constant"
    sop = _for_head(config, "gm-sop-4-2")
    assert sop["num_iterations"] == 3 and sop["gate_init"] == "constant" and sop["bn_momentum"] == 0.7
    assert _for_head(sop, "gm-gap-4-2")["num_iterations"] is None  # build_model would refuse it
    statistics = dict(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0])
    hypermodel = GMSOPHyperModel(dict(config, batch_size=4), (16, 16, 3), 5, steps_per_epoch=2, statistics=statistics)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_family", "gm-sop")
    hp.Fixed("nk", "4-2")
    model = hypermodel.build(hp)
    assert model.get_layer("mixture").num_iterations == 3
    normalization = model.get_layer("normalization").get_config()
    np.testing.assert_allclose(np.ravel(normalization["mean"]), statistics["mean"])
    np.testing.assert_allclose(np.ravel(normalization["variance"]), np.square(statistics["std"]))
