"""The results table from KerasTuner trials: values, failed trials with their reason, order, Markdown."""

import os
import types

import keras_tuner

from tuning.results import read_results, trial_rows, write_results


def make_trial(trial_id, nk, alpha, status, top1=None, message=None):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_family", "gm-gap")
    hp.Fixed("nk", nk)
    hp.Fixed("balance_loss_weight", alpha)
    hp.Fixed("lr", 0.075)
    trial = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id, status=status, message=message)
    if top1 is not None:
        for step, (loss, val_top1, val_top5) in enumerate([(2.0, top1 - 0.1, 0.9), (1.5, top1, 0.95)]):
            for name, value in (("loss", loss), ("val_top1", val_top1), ("val_top5", val_top5)):
                if not trial.metrics.exists(name):
                    trial.metrics.register(name, direction="max" if name.startswith("val") else "min")
                trial.metrics.update(name, value, step=step)
        trial.best_step = 1
        trial.score = top1
    return trial


def make_tuner(tmp_path, trials):
    project = tmp_path / "keras_tuner"
    for trial in trials:
        os.makedirs(project / f"trial_{trial.trial_id}")
    log = project / "trial_0" / "log.csv"  # as the tuner's CSVLogger writes it
    log.write_text("epoch,images_per_second,loss,val_top1\n1,NA,2.0,0.5\n2,812.5,1.5,0.6\n")  # epochs from 1
    oracle = types.SimpleNamespace(trials={t.trial_id: t for t in trials})
    return types.SimpleNamespace(oracle=oracle, project_dir=str(project))


def test_rows_hold_the_best_epoch_speed_epochs_and_failure_reasons(tmp_path):
    trials = [
        make_trial("0", "16-8", 100.0, "COMPLETED", top1=0.6),
        make_trial("1", "4-2", 0.0, "COMPLETED", top1=0.7),
        make_trial("2", "8-8", 10.0, "FAILED", message="Traceback ...\n  ...\nFailedTrialError: out of memory\n"),
    ]
    tuner = make_tuner(tmp_path, trials)
    rows = {r["trial_id"]: r for r in trial_rows(tuner, "nk")}
    best = rows["0"]
    assert (best["head"], best["num_components"], best["top_k"], best["balance_loss_weight"]) == ("gm-gap-16-8", 16, 8, 100.0)
    assert best["val_top1_error"] == 1 - 0.6 and best["val_top5_error"] == 1 - 0.95
    assert (best["images_per_second"], best["epochs"], best["status"], best["reason"]) == (812.5, 2, "COMPLETED", "")
    assert rows["1"]["images_per_second"] is None and rows["1"]["epochs"] is None  # no log.csv
    failed = rows["2"]
    assert failed["status"] == "FAILED" and failed["reason"] == "FailedTrialError: out of memory"
    assert failed["val_top1_error"] is None


def test_order_and_both_tables(tmp_path):
    trials = [
        make_trial("0", "16-8", 100.0, "COMPLETED", top1=0.6),
        make_trial("1", "4-2", 0.0, "COMPLETED", top1=0.7),
        make_trial("2", "8-8", 10.0, "FAILED", message="ValueError: bad"),
    ]
    tuner = make_tuner(tmp_path, trials)
    assert [r["trial_id"] for r in trial_rows(tuner, "nk")] == ["1", "2", "0"]  # by N, K, alpha
    rows = trial_rows(tuner, "free")
    assert [r["trial_id"] for r in rows] == ["1", "0", "2"]  # best first, failed last
    csv_path, md_path = write_results(rows, str(tmp_path))
    written = read_results(csv_path)
    assert [(r["trial_id"], r["val_top1_error"], r["images_per_second"], r["status"]) for r in written] == [
        ("1", "0.3", "", "COMPLETED"), ("0", "0.4", "812.5", "COMPLETED"), ("2", "", "", "FAILED")]
    lines = open(md_path).read().splitlines()
    assert lines[0].startswith("| trial_id | study | head | N | K | alpha | lr | val top-1 error (%) |")
    assert len(lines) == 2 + 3
    assert "| 0 | free | gm-gap-16-8 | 16 | 8 | 100 | 0.075 | 40.00 | 5.00 | 812.5 | 2 | COMPLETED |  |" == lines[3]
    assert lines[4].endswith("| FAILED | ValueError: bad |")
