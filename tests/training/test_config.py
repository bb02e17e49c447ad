"""Configuration: presets, precedence, stage scaling, continuing a run, one declaration per option."""

import inspect
import re

import pytest
import yaml

from gmsop_keras.cli.arguments import resolve_config
from gmsop_keras.training.config import model_options
from gmsop_keras.training.options import BY_NAME, MODEL_OPTION_KEYS, OPTIONS
from gmsop_keras.training.saved_config import check_model_dir, write_config
from gmsop_keras.training.errors import UsageError
from gmsop_keras.models.presets import PRESETS

SWITCHES = ("weight_decay", "weight_decay_mode", "decay_norms_and_biases", "num_iterations", "gate_input_norm",
            "gate_init", "representation_gamma", "sop_baseline_bn", "bn_momentum")


def _resolve(tmp_path, *flags):
    return resolve_config(["--dataset", "imagenet64", "--model-dir", str(tmp_path / "run"), *flags])


@pytest.mark.parametrize(
    "preset, expected, passed",
    [
        ("default", dict(weight_decay=5e-4, weight_decay_mode="decoupled", decay_norms_and_biases=False,
                         num_iterations=5, gate_input_norm=True, gate_init="random", representation_gamma=None,
                         bn_momentum=0.9), {}),
        ("paper", dict(weight_decay=5e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
                       num_iterations=5, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
                       bn_momentum=0.7),
         dict(gate_input_norm=False, gate_init="constant", representation_gamma=1.0, bn_momentum=0.7, dropout=0.2)),
        ("official", dict(weight_decay=1e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
                          num_iterations=3, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
                          bn_momentum=0.7),
         dict(num_iterations=3, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
              bn_momentum=0.7, dropout=0.2)),
    ],
)
def test_each_preset_lands_whole_in_config_yaml(preset, expected, passed, tmp_path):
    config = _resolve(tmp_path, "--preset", preset, "--head", "gm-sop-16-8")
    write_config(config)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["preset"] == preset and saved["recipe"] == PRESETS[preset]["recipe"]
    assert {k: saved[k] for k in expected} == expected
    assert saved["sop_baseline_bn"] is None  # not an SR-SOP baseline: the switch does not apply
    assert model_options(config) == passed  # only what departs from build_model's defaults
    stages = {"default": [40, 10, 5, 5], "paper": [40, 10, 5, 5], "official": [40, 10, 5, 5]}[preset]
    assert saved["stages"] == stages and saved["epochs"] == 60 and saved["lr"] == 0.1


def test_official_preset_takes_the_official_wrn_schedule(tmp_path):
    config = _resolve(tmp_path, "--preset", "official", "--backbone", "wrn-36-2", "--head", "gm-sop-16-8")
    assert config["stages"] == [20, 10, 5, 5] and config["lr"] == 0.09 and config["batch_size"] == 150
    assert config["dropout"] == 0.4 and config["weight_decay"] == 1e-4


def test_model_switches_are_set_only_where_they_apply(tmp_path):
    gap = _resolve(tmp_path, "--preset", "official", "--head", "gap")
    assert [gap[k] for k in ("num_iterations", "gate_input_norm", "gate_init", "representation_gamma",
                             "sop_baseline_bn")] == [None] * 5
    assert gap["bn_momentum"] == 0.7 and model_options(gap) == {"bn_momentum": 0.7}
    sr_sop = _resolve(tmp_path, "--preset", "official", "--head", "sr-sop")
    assert sr_sop["sop_baseline_bn"] is False and sr_sop["representation_gamma"] is None  # no BatchNorm there
    assert sr_sop["num_iterations"] == 3 and sr_sop["gate_init"] is None
    kept = _resolve(tmp_path, "--preset", "official", "--head", "sr-sop", "--sop-baseline-bn")
    assert kept["sop_baseline_bn"] is True and kept["representation_gamma"] == 1.0
    seed_family = _resolve(tmp_path, "--preset", "official", "--backbone", "gsop2-resnet50", "--head", "isqrt-256")
    assert model_options(seed_family) == {} and seed_family["weight_decay_mode"] == "coupled"


def test_precedence_flags_over_yaml_over_preset_over_recipe(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("weight_decay: 3e-4\ngate-input-norm: true\nbatch_size: 32\n")
    config = _resolve(tmp_path, "--preset", "official", "-c", str(path), "--batch-size", "64")
    assert config["weight_decay"] == 3e-4  # YAML over the preset
    assert config["gate_input_norm"] is True and config["gate_init"] == "constant"  # YAML, then the preset
    assert config["batch_size"] == 64  # the flag over YAML over the recipe row
    off = _resolve(tmp_path, "--preset", "official", "-c", str(path), "--no-gate-input-norm")
    assert off["gate_input_norm"] is False  # --no-x switches off what the YAML file set
    mixed = _resolve(tmp_path, "--preset", "default", "--recipe", "official", "--head", "gm-gap-16-8")
    assert mixed["weight_decay"] == 5e-4 and mixed["weight_decay_mode"] == "decoupled"  # the preset's
    assert mixed["stages"] == [50, 15, 10] and mixed["dropout"] == 0.2  # the official row's


def test_a_resumed_run_with_another_preset_is_refused(tmp_path):
    write_config(_resolve(tmp_path, "--preset", "default"))
    check_model_dir(_resolve(tmp_path, "--preset", "default"))  # the same: resumes
    with pytest.raises(UsageError, match="preset: 'default' there, 'paper' now"):
        check_model_dir(_resolve(tmp_path, "--preset", "paper"))


def test_epochs_scale_the_recipe_stages_and_say_so(tmp_path, capsys):
    config = _resolve(tmp_path, "--head", "gm-sop-16-8", "--epochs", "6")
    assert config["stages"] == [3, 1, 1, 1] and config["epochs"] == 6
    assert capsys.readouterr().out.strip() == (
        "note: the paper recipe's stages 40 10 5 5 scaled to --epochs 6: 3 1 1 1 (give --stages to set them yourself)")
    write_config(config)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["stages"] == [3, 1, 1, 1]
    explicit = _resolve(tmp_path / "other", "--head", "gm-sop-16-8", "--epochs", "6", "--stages", "5", "1")
    assert explicit["stages"] == [5, 1] and "note" not in capsys.readouterr().out  # --stages wins
    unchanged = _resolve(tmp_path / "other", "--head", "gm-sop-16-8", "--epochs", "60")
    assert unchanged["stages"] == [40, 10, 5, 5] and "note" not in capsys.readouterr().out


def test_a_continued_run_keeps_its_recorded_stages(tmp_path, capsys):
    write_config(_resolve(tmp_path, "--head", "gm-sop-16-8", "--epochs", "6"))
    capsys.readouterr()
    again = _resolve(tmp_path, "--head", "gm-sop-16-8", "--epochs", "6")
    assert again["stages"] == [3, 1, 1, 1] and capsys.readouterr().out == ""
    longer = _resolve(tmp_path, "--head", "gm-sop-16-8", "--epochs", "10")
    # The six epochs trained followed 3 1 1 1; epochs 7-10 go on at the last stage's rate (lr / 1000)
    # rather than rescaling, which would put epochs already trained at lr / 10 back to lr.
    assert longer["stages"] == [3, 1, 1, 1] and longer["epochs"] == 10
    assert "epochs 7-10 run at the last stage's rate" in capsys.readouterr().out
    check_model_dir(longer)  # stages and epochs may differ on a continued run


def test_a_folder_gets_its_own_recipe(tmp_path):
    config = resolve_config(["--dataset", str(tmp_path / "my-images"), "--head", "gm-sop-16-8"])
    assert config["stages"] == [20, 5, 5] and config["lr"] == 0.05 and config["batch_size"] == 128


def test_every_model_option_default_is_build_models():
    """`model_options()` leaves out a value equal to `model_default`, so that value must be what
    build_model uses when the option is not given (its keywords default to None, "not given",
    and the head's and backbone's own defaults apply)."""
    from gmsop_keras.models import build_model
    from gmsop_keras.models.backbones import build_backbone
    from gmsop_keras.models.heads import DEFAULT_ITERATIONS, apply_head

    parameters = inspect.signature(build_model).parameters
    assert set(MODEL_OPTION_KEYS) <= set(parameters)
    assert all(parameters[key].default is None for key in MODEL_OPTION_KEYS)
    # Chosen by build_model per model (dropout 0.2 or 0.4, last stride 1 or 2): no single default.
    per_model = {"dropout", "last_stride"}
    effective = {**{k: p.default for k, p in inspect.signature(build_backbone).parameters.items()},
                 **{k: p.default for k, p in inspect.signature(apply_head).parameters.items()}}
    # apply_head's num_iterations=None is the head's own count: the paper's 5 for every head it applies to.
    if effective["num_iterations"] is None:
        effective["num_iterations"] = DEFAULT_ITERATIONS
    for key in MODEL_OPTION_KEYS:
        if key in per_model:
            assert BY_NAME[key].model_default is None, key
        elif key == "gsop_stages":
            assert BY_NAME[key].model_default is None and effective[key] == (), key
        else:
            assert BY_NAME[key].model_default == effective[key], key


def test_new_options_are_declared_once_with_checks():
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    for name in ("preset", "weight_decay_mode", "decay_norms_and_biases") + SWITCHES:
        assert name in BY_NAME
    with pytest.raises(UsageError, match="weight_decay_mode must be one of decoupled, coupled"):
        _check({"weight_decay_mode": "l2"})
    with pytest.raises(UsageError, match="bn_momentum must be < 1"):
        _check({"bn_momentum": 1.0})
    with pytest.raises(UsageError, match="representation_gamma must be > 0"):
        _check({"representation_gamma": 0.0})


def _check(values):
    from gmsop_keras.training.config import check_values

    check_values(values)


def test_head_defaults_to_the_backbones_own():
    from gmsop_keras.models.imagenet_resnets import IMAGENET_MODELS
    from gmsop_keras.models.names import IMAGENET_OWN_HEADS

    assert IMAGENET_OWN_HEADS == {name: spec["head"] for name, spec in IMAGENET_MODELS.items()}
    assert resolve_config([])["head"] == "gm-sop-16-8"
    assert resolve_config(["--backbone", "gsop2-resnet50"])["head"] == "isqrt-256"
    assert resolve_config(["--backbone", "resnet50-3g"])["model_dir"].endswith("synthetic-resnet50-3g-3g-256")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backbone", "resnet50-imagenet", "--num-iterations", "3"],
         "--num-iterations does not apply to backbone='resnet50-imagenet', head='gap'"),
        (["--head", "gap", "--dropout", "0.3"], "--dropout does not apply to backbone='resnet18', head='gap'"),
        (["--head", "netvlad-64", "--gate-init", "constant"], "--gate-init does not apply"),
    ],
)
def test_an_option_the_model_does_not_use_is_refused_in_one_line(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        resolve_config(argv)
    assert "Leave it out for this model." in str(caught.value)


def test_resolve_takes_a_dict_from_python_with_the_same_checks(tmp_path):
    from gmsop_keras.training.config import resolve

    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 32\n")
    config = resolve({"head": "gm-sop-16-8", "lr": 0.2, "model_dir": str(tmp_path / "run")}, config_file=str(path))
    assert config == resolve_config(["--head", "gm-sop-16-8", "--lr", "0.2", "--model-dir", str(tmp_path / "run"),
                                     "-c", str(path)])
    assert config["batch_size"] == 32 and config["num_iterations"] == 5
    with pytest.raises(UsageError, match=re.escape("--dropout does not apply to backbone='resnet18', head='gap'")):
        resolve({"head": "gap", "dropout": 0.3})
    with pytest.raises(UsageError, match=r"unknown options: \['learning_rate'\]"):
        resolve({"learning_rate": 0.1})


def test_a_run_from_before_the_new_options_resumes_with_their_defaults(tmp_path):
    config = resolve_config(["--head", "gm-gap-4-2", "--model-dir", str(tmp_path / "old")])
    write_config({k: v for k, v in config.items() if k not in NEW_OPTIONS})
    check_model_dir(config)  # the defaults: what the run did before the options existed
    for flag in (["--preset", "paper"], ["--weight-decay-mode", "coupled"], ["--gate-init", "constant"],
                 ["--augment", "chrabaszcz"]):
        changed = resolve_config(["--head", "gm-gap-4-2", "--model-dir", str(tmp_path / "old"), *flag])
        with pytest.raises(UsageError, match="different configuration"):
            check_model_dir(changed)


NEW_OPTIONS = ("preset", "weight_decay_mode", "decay_norms_and_biases", "gate_input_norm", "gate_init",
               "representation_gamma", "sop_baseline_bn", "bn_momentum", "augment")


@pytest.mark.parametrize("preset, backbone, head, saved_unset", [
    ("paper", "resnet18", "gm-sop-16-8", ("noise", "dropout")),  # build_model's 0.2 and per_sample then and now
    ("official", "resnet18", "gm-gap-16-8", ("noise",)),
    ("default", "wrn-36-2", "gm-sop-16-8", ("noise",)),
])
def test_a_run_saved_before_the_preset_set_noise_and_dropout_resumes(tmp_path, preset, backbone, head, saved_unset):
    # Runs saved while the presets left `noise` (and the paper preset `dropout`) unset got build_model's
    # defaults, which are the values the presets now set: the same model, so they resume.
    config = _resolve(tmp_path, "--preset", preset, "--backbone", backbone, "--head", head)
    write_config({k: (None if k in saved_unset else v) for k, v in config.items()})
    check_model_dir(config)


def test_a_paper_wrn_run_saved_with_the_old_dropout_is_refused(tmp_path):
    # The paper preset's WRN-36-2 GM-SOP used build_model's 0.4 and now sets the paper's 0.2: a new model.
    config = _resolve(tmp_path, "--preset", "paper", "--backbone", "wrn-36-2", "--head", "gm-sop-16-8")
    assert config["dropout"] == 0.2
    write_config({**config, "dropout": None})
    with pytest.raises(UsageError, match=r"dropout: None there, 0\.2 now"):
        check_model_dir(config)
    # What it was trained with, given explicitly, resumes it.
    check_model_dir(_resolve(tmp_path, "--preset", "paper", "--backbone", "wrn-36-2", "--head", "gm-sop-16-8",
                             "--dropout", "0.4"))


def test_every_preset_resolves_for_every_small_image_model_and_dataset(tmp_path):
    # A recipe row's value must apply to every model the row matches (the official WRN-36-2
    # SR-SOP row's dropout once made `--preset official` refuse that model).
    from gmsop_keras.models.names import CANONICAL_HEADS, SMALL_IMAGE_BACKBONES

    refused = []
    for preset in PRESETS:
        for dataset in ("imagenet64", "places365", "synthetic"):
            for backbone in SMALL_IMAGE_BACKBONES:
                for head in CANONICAL_HEADS:
                    try:
                        resolve_config(["--preset", preset, "--dataset", dataset, "--backbone", backbone,
                                        "--head", head, "--model-dir", str(tmp_path / "run")])
                    except UsageError as error:
                        refused.append((preset, dataset, backbone, head, str(error)[:80]))
    assert refused == []
