"""python -m tuning.search: each study on the tiny synthetic set, its table and plots, resuming, clear errors."""

import csv
import importlib.util
import json
import os

import pytest

from gmsop_keras.cli.errors import run_cli
from tuning.results import read_results
from tuning.search import main as search_main

STEPS, BATCH = 2, 16
TINY = ["--batch-size", str(BATCH), "--epochs", "1", "--steps-per-epoch", str(STEPS), "--lr", "0.02",
        "--seed", "0", "--verbose", "0"]
PNG = b"\x89PNG\r\n\x1a\n"


def search(study, dataset, directory, *flags):
    return run_cli(search_main, [study, "--dataset", dataset, "--directory", str(directory)] + TINY + list(flags))


def trial_folders(directory):
    return sorted(name for name in os.listdir(os.path.join(directory, "keras_tuner")) if name.startswith("trial_"))


def oracle_trials(directory):
    """What KerasTuner itself recorded: trial id -> trial.json."""
    return {name[len("trial_"):]: json.load(open(os.path.join(directory, "keras_tuner", name, "trial.json")))
            for name in trial_folders(directory)}


def last_epoch_usage(directory, trial_id):
    with open(os.path.join(directory, "keras_tuner", f"trial_{trial_id}", "component_usage.csv")) as f:
        rows = list(csv.DictReader(f))
    return [int(v) for k, v in rows[-1].items() if k.startswith("component_")]


def markdown_rows(directory):
    lines = open(os.path.join(directory, "results.md")).read().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG, path


def assert_rerun_starts_no_trial(study, dataset, directory, flags, capsys):
    before = trial_folders(directory)
    tables = [open(os.path.join(directory, name)).read() for name in ("results.csv", "results.md")]
    capsys.readouterr()
    assert search(study, dataset, directory, *flags) == 0
    out = capsys.readouterr().out
    assert "(0 run by this command" in out
    assert trial_folders(directory) == before
    assert [open(os.path.join(directory, name)).read() for name in ("results.csv", "results.md")] == tables


def assert_trial_rows_match_the_oracle(rows, directory, study):
    trials = oracle_trials(directory)
    assert sorted(r["trial_id"] for r in rows) == sorted(trials)
    for row in rows:
        trial = trials[row["trial_id"]]
        assert row["study"] == study and row["status"] == "COMPLETED" and row["reason"] == ""
        assert float(row["val_top1_error"]) == pytest.approx(1.0 - trial["score"], abs=1e-5)
        assert 0.0 <= float(row["val_top5_error"]) <= float(row["val_top1_error"]) <= 1.0
        assert float(row["images_per_second"]) > 0
        values = trial["hyperparameters"]["values"]
        assert row["head"] == f"{values['head_family']}-{values['nk']}"
        assert float(row["balance_loss_weight"]) == pytest.approx(values["balance_loss_weight"])
        assert float(row["lr"]) == pytest.approx(values["lr"])


@pytest.fixture(scope="module")
def alpha_study(tiny_synthetic, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tuning") / "alpha"
    assert search("alpha", tiny_synthetic, directory, "--alphas", "0", "100") == 0
    return str(directory)


def test_alpha_study_table_is_one_row_per_alpha_of_gm_gap_16_4(alpha_study):
    rows = read_results(os.path.join(alpha_study, "results.csv"))
    assert [(r["head"], r["num_components"], r["top_k"], r["balance_loss_weight"]) for r in rows] == [
        ("gm-gap-16-4", "16", "4", "0"), ("gm-gap-16-4", "16", "4", "100")]
    assert all(r["lr"] == "0.02" and r["epochs"] == "1" for r in rows)
    assert_trial_rows_match_the_oracle(rows, alpha_study, "alpha")
    table = markdown_rows(alpha_study)
    assert [(cells[0], cells[5]) for cells in table] == [(r["trial_id"], r["balance_loss_weight"]) for r in rows]
    assert [cells[7] for cells in table] == [f"{100 * float(r['val_top1_error']):.2f}" for r in rows]


def test_alpha_study_records_component_usage_and_plots_figure_2(alpha_study):
    for trial_id in oracle_trials(alpha_study):
        counts = last_epoch_usage(alpha_study, trial_id)
        assert len(counts) == 16 and sum(counts) == STEPS * BATCH * 4  # each sample goes to K = 4 components
    assert_png(os.path.join(alpha_study, "component_usage.png"))
    assert_png(os.path.join(alpha_study, "error_vs_alpha.png"))


def test_alpha_study_rerun_resumes_without_a_new_trial(alpha_study, tiny_synthetic, capsys):
    assert_rerun_starts_no_trial("alpha", tiny_synthetic, alpha_study, ["--alphas", "0", "100"], capsys)


def test_alpha_study_refuses_a_folder_made_for_other_settings(alpha_study, tiny_synthetic, capsys):
    assert search("alpha", tiny_synthetic, alpha_study, "--alphas", "0", "10") == 2
    err = capsys.readouterr().err
    assert "holds a search with other settings (space differ)" in err and "Traceback" not in err
    assert len(trial_folders(alpha_study)) == 2


def test_nk_study_runs_only_pairs_with_k_at_most_n_and_resumes(tiny_synthetic, tmp_path, capsys):
    directory = tmp_path / "nk"
    flags = ["--n", "4", "--k", "1", "2", "8"]
    assert search("nk", tiny_synthetic, directory, *flags, "--max-trials", "1") == 0
    assert [r["head"] for r in read_results(os.path.join(directory, "results.csv"))] == ["gm-gap-4-1"]
    # A later run goes on with the rest of the grid (KerasTuner 1.4.8's own grid search would stop here).
    assert search("nk", tiny_synthetic, directory, *flags) == 0
    rows = read_results(os.path.join(directory, "results.csv"))
    assert [(r["num_components"], r["top_k"], r["balance_loss_weight"]) for r in rows] == [
        ("4", "1", "100"), ("4", "2", "100")]  # K = 8 > N = 4 is never proposed
    assert_trial_rows_match_the_oracle(rows, str(directory), "nk")
    for row in rows:
        assert sum(last_epoch_usage(directory, row["trial_id"])) == STEPS * BATCH * int(row["top_k"])
    assert_png(os.path.join(directory, "error_vs_k.png"))
    assert_png(os.path.join(directory, "images_per_second.png"))
    assert_rerun_starts_no_trial("nk", tiny_synthetic, str(directory), flags, capsys)


@pytest.mark.parametrize("tuner", ["hyperband", "bayesian"])
def test_free_study_searches_alpha_nk_and_lr_within_their_ranges(tuner, tiny_synthetic, tmp_path, capsys):
    if tuner == "bayesian" and importlib.util.find_spec("sklearn") is None:
        pytest.skip("KerasTuner's BayesianOptimization needs scikit-learn")
    directory = tmp_path / tuner
    flags = ["--tuner", tuner, "--head-family", "gm-gap", "--n", "4", "--k", "1", "2",
             "--alpha-range", "1", "1000", "--lr-range", "0.005", "0.05"]
    flags += ["--max-trials", "2"] if tuner == "bayesian" else []
    assert search("free", tiny_synthetic, directory, *flags) == 0
    rows = read_results(os.path.join(directory, "results.csv"))
    assert len(rows) == (2 if tuner == "bayesian" else 1)  # Hyperband with one epoch: one bracket of one model
    assert_trial_rows_match_the_oracle(rows, str(directory), "free")
    for row in rows:
        assert row["head"] in ("gm-gap-4-1", "gm-gap-4-2")
        assert 1 <= float(row["balance_loss_weight"]) <= 1000 and 0.005 <= float(row["lr"]) <= 0.05
    errors = [float(r["val_top1_error"]) for r in rows]
    assert errors == sorted(errors)  # best first
    assert_png(os.path.join(directory, "trials.png"))
    assert_rerun_starts_no_trial("free", tiny_synthetic, str(directory), flags, capsys)


@pytest.mark.parametrize("flags, message", [
    (["nk", "--n", "2", "--k", "4", "8"], "no pair has K <= N"),
    (["alpha", "--alphas", "-1", "10"], "`alphas` must be >= 0"),
    (["free", "--tuner", "hyperband", "--max-trials", "3"], "--max-trials does not apply to --tuner hyperband"),
    (["free", "--alphas", "1", "--alpha-range", "1", "10"], "not both"),
    (["nk", "--backbone", "resnet7"], "Unknown backbone"),
])
def test_bad_requests_are_one_line_errors(flags, message, tiny_synthetic, tmp_path, capsys):
    directory = tmp_path / "bad"
    assert run_cli(search_main, flags + ["--dataset", tiny_synthetic, "--directory", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(directory, "keras_tuner"))


def test_an_interrupted_trial_is_run_again_and_the_grid_goes_on(tiny_synthetic, tmp_path, capsys):
    directory = str(tmp_path / "interrupted")
    flags = ["--n", "4", "--k", "1", "2", "4"]
    assert search("nk", tiny_synthetic, directory, *flags, "--max-trials", "2") == 0
    first, second = (name[len("trial_"):] for name in trial_folders(directory))  # ids "0", "1" (max_trials 2)
    # Make the state what a process killed during the second trial leaves: that trial RUNNING and ongoing.
    project = os.path.join(directory, "keras_tuner")
    trial_path = os.path.join(project, f"trial_{second}", "trial.json")
    trial = json.load(open(trial_path))
    trial.update(status="RUNNING", score=None, best_step=0, metrics={"metrics": {}})
    json.dump(trial, open(trial_path, "w"))
    oracle = json.load(open(os.path.join(project, "oracle.json")))
    oracle.update(ongoing_trials={"tuner0": second}, end_order=[first])
    json.dump(oracle, open(os.path.join(project, "oracle.json"), "w"))
    os.remove(os.path.join(project, f"trial_{second}", "log.csv"))
    capsys.readouterr()

    # The interrupted trial runs again, then the grid goes on (KerasTuner 1.4.8's own: KeyError).
    assert search("nk", tiny_synthetic, directory, *flags) == 0
    assert "3 trials (2 run by this command, 0 not completed)" in capsys.readouterr().out
    rows = read_results(os.path.join(directory, "results.csv"))
    assert [(r["trial_id"], r["head"], r["status"], r["epochs"]) for r in rows] == [
        (first, "gm-gap-4-1", "COMPLETED", "1"), (second, "gm-gap-4-2", "COMPLETED", "1"),
        ("0002", "gm-gap-4-4", "COMPLETED", "1")]  # KerasTuner pads ids to the digits of max_trials


def test_training_flags_are_fits_options():
    from gmsop_keras.training.options import OPTIONS
    from tuning.search import STUDY_OWNS, _fit_config, build_parser

    actions = {a.dest: a for a in build_parser()._actions}
    for option in OPTIONS:
        if option.name in STUDY_OWNS:
            assert option.name not in actions
            continue
        action = actions[option.name]  # every other option of fit is a flag here, with fit's choices
        assert action.option_strings[0] == "--" + option.name.replace("_", "-")
        assert tuple(action.choices or ()) == tuple(option.choices)
    args = build_parser().parse_args(["nk", "--preset", "official", "--no-gate-input-norm", "--epochs", "2"])
    config = _fit_config(args, "gm-sop-4-2")
    assert config["preset"] == "official" and config["gate_input_norm"] is False and config["num_iterations"] == 3
    assert config["weight_decay_mode"] == "coupled" and config["stages"] == [1, 1]  # the synthetic row 4 2, scaled to 2
