"""One row per trial, read from KerasTuner's oracle, written as `results.csv` and `results.md`.

The tables are rebuilt from the oracle's state on every run, so a resumed
search's table holds every trial, old and new. Validation errors are those of
the trial's best epoch by `val_top1` (what the tuner ranks by, from the oracle);
epochs and images/s (training throughput over the whole trial,
`TrainingThroughput`) come from the trial's `log.csv` (`tuning.tuners`).
"""

import csv
import io
import math

from pipelines import storage
from tuning.studies import parse_nk
from tuning.tuners import TRIAL_LOG

COLUMNS = (
    "trial_id", "study", "head", "num_components", "top_k", "balance_loss_weight", "lr",
    "val_top1_error", "val_top5_error", "images_per_second", "epochs", "status", "reason",
)
MARKDOWN_HEADERS = {
    "num_components": "N", "top_k": "K", "balance_loss_weight": "alpha",
    "val_top1_error": "val top-1 error (%)", "val_top5_error": "val top-5 error (%)",
}


def trial_rows(tuner, study):
    """Rows (dicts with `COLUMNS`) for every trial `tuner`'s oracle knows, sorted for `study`."""
    rows = [_row(trial, study, trial_dir(tuner, trial.trial_id)) for trial in tuner.oracle.trials.values()]
    return sort_rows(rows, study)


def trial_dir(tuner, trial_id):
    """A trial's folder (without creating it, unlike `tuner.get_trial_dir`)."""
    return storage.join(tuner.project_dir, f"trial_{trial_id}")


def sort_rows(rows, study):
    """`free`: best first (failed trials last); `alpha` and `nk`: by N, K, alpha."""
    if study == "free":
        return sorted(rows, key=lambda r: (r["val_top1_error"] is None, r["val_top1_error"] or 0, int(r["trial_id"])))
    return sorted(rows, key=lambda r: (r["num_components"], r["top_k"], r["balance_loss_weight"], int(r["trial_id"])))


def write_results(rows, directory):
    """Writes `results.csv` (raw values) and `results.md` (errors in %); returns both paths."""
    csv_path = storage.join(directory, "results.csv")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row[k]) for k in COLUMNS})
    storage.write_text(csv_path, text.getvalue(), newline="")
    md_path = storage.join(directory, "results.md")
    lines = [
        "| " + " | ".join(MARKDOWN_HEADERS.get(k, k) for k in COLUMNS) + " |",
        "|" + "|".join(" ---: " if k in _NUMERIC else " --- " for k in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_value(k, row[k]) for k in COLUMNS) + " |")
    storage.write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def read_results(path):
    """`results.csv` back as rows of strings."""
    with storage.open_file(path, newline="") as f:
        return list(csv.DictReader(f))


_NUMERIC = {"num_components", "top_k", "balance_loss_weight", "lr", "val_top1_error", "val_top5_error",
            "images_per_second", "epochs"}


def _row(trial, study, folder):
    values = trial.hyperparameters.values
    n, k = parse_nk(values["nk"])
    metrics = trial.metrics
    top1 = _best(metrics, "val_top1", trial.best_step)
    top5 = _best(metrics, "val_top5", trial.best_step)
    log = _read_log(storage.join(folder, TRIAL_LOG))
    return {
        "trial_id": trial.trial_id,
        "study": study,
        "head": f"{values['head_family']}-{n}-{k}",
        "num_components": n,
        "top_k": k,
        "balance_loss_weight": float(values["balance_loss_weight"]),
        "lr": float(values["lr"]),
        "val_top1_error": None if top1 is None else 1.0 - top1,
        "val_top5_error": None if top5 is None else 1.0 - top5,
        "images_per_second": _float(log[-1].get("images_per_second")) if log else None,
        "epochs": int(log[-1]["epoch"]) if log else None,  # counted from 1; Hyperband: with the epochs a trial took over
        "status": str(trial.status),
        "reason": _reason(trial),
    }


def _best(metrics, name, best_step):
    """The metric at the objective's best epoch."""
    if not metrics.exists(name):
        return None
    history = metrics.get_history(name)
    for observation in history:
        if observation.step == best_step:
            return float(observation.mean())
    return float(history[-1].mean()) if history else None


def _read_log(path):
    if not storage.isfile(path):
        return []
    with storage.open_file(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):  # missing, or CSVLogger's "NA"
        return None


def _reason(trial):
    if trial.status in ("COMPLETED", "RUNNING", "IDLE") or not trial.message:
        return ""
    lines = [line.strip() for line in str(trial.message).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.12g}"
    return value


def _markdown_value(key, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("val_top1_error", "val_top5_error"):
        return f"{100 * value:.2f}"
    if key == "images_per_second":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")
