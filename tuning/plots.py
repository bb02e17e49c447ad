"""Plots of the studies in the style of the paper's Figs. 2-3, drawn from the results rows.

- `alpha`: `component_usage.png`, samples per component in the last epoch for
  the first and the last alpha (Fig. 2 left), and `error_vs_alpha.png`,
  validation top-1 error against alpha on a symmetric-log axis so that alpha = 0
  shows (Fig. 2 right);
- `nk`: `error_vs_k.png`, top-1 error against K with one line per N, and
  `images_per_second.png`, training speed against K per N (Fig. 3);
- `free`: `trials.png`, each trial's error in the order they ran and the best so far.
"""

import csv
import io

import numpy as np

from pipelines import storage

COLORS = ("#4477aa", "#cc6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")


def plot_study(study, rows, directory, trial_dirs):
    """Draws the study's figures into `directory`; returns their paths.

    Args:
        study: `"alpha"`, `"nk"` or `"free"`.
        rows: `tuning.results.trial_rows(...)`.
        directory: where the PNGs go.
        trial_dirs: trial id -> the trial's folder (for `component_usage.csv`).
    """
    done = [r for r in rows if r["val_top1_error"] is not None]
    if not done:
        return []
    if study == "alpha":
        paths = [_error_vs_alpha(done, storage.join(directory, "error_vs_alpha.png"))]
        usage = _first_and_last_alpha_usage(done, trial_dirs)
        if usage:
            paths.append(_usage_bars(usage, storage.join(directory, "component_usage.png")))
        return paths
    if study == "nk":
        return [
            _per_n(done, "val_top1_error", "top-1 error (%)", storage.join(directory, "error_vs_k.png")),
            _per_n(done, "images_per_second", "training images / s", storage.join(directory, "images_per_second.png")),
        ]
    return [_trials(done, storage.join(directory, "trials.png"))]


def last_epoch_usage(trial_dir):
    """Samples per component in the last epoch of a trial (`component_usage.csv`), or None."""
    path = storage.join(trial_dir, "component_usage.csv")
    if not storage.isfile(path):
        return None
    with storage.open_file(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    last = max(int(r["epoch"]) for r in rows)
    counts = [r for r in rows if int(r["epoch"]) == last][0]
    return np.array([int(v) for k, v in counts.items() if k.startswith("component_")])


def _first_and_last_alpha_usage(rows, trial_dirs):
    pair = (rows[0]["num_components"], rows[0]["top_k"])  # rows are sorted by N, K, alpha
    same = [r for r in rows if (r["num_components"], r["top_k"]) == pair]
    usage = []
    for row in (same[0], same[-1]) if len(same) > 1 else same[:1]:
        counts = last_epoch_usage(trial_dirs.get(row["trial_id"], ""))
        if counts is not None:
            usage.append((f"{row['head']}, alpha = {row['balance_loss_weight']:g}", counts))
    return usage


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _usage_bars(usage, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    width = 0.8 / len(usage)
    for i, (label, counts) in enumerate(usage):
        x = np.arange(1, len(counts) + 1) + (i - (len(usage) - 1) / 2) * width
        ax.bar(x, counts, width=width, color=COLORS[i % len(COLORS)], label=label)
    ax.set_xticks(np.arange(1, len(usage[0][1]) + 1))
    ax.set_xlabel("component")
    ax.set_ylabel("samples received (last epoch)")
    ax.set_title("samples per component: first and last alpha (cf. Fig. 2 left)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _error_vs_alpha(rows, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for i, (label, group) in enumerate(_groups(rows, "head")):
        alphas = [r["balance_loss_weight"] for r in group]
        ax.plot(alphas, [100 * r["val_top1_error"] for r in group], "o-", color=COLORS[i % len(COLORS)], label=label)
    ax.set_xscale("symlog", linthresh=1.0)  # linear near 0, so alpha = 0 has a place on the axis
    ax.set_xlabel("alpha (balance loss weight)")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("validation error vs alpha (cf. Fig. 2 right)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _per_n(rows, key, label, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for i, (n, group) in enumerate(_groups(rows, "num_components")):
        group = [r for r in group if r[key] is not None]
        if not group:
            continue
        scale = 100 if key.endswith("error") else 1
        ax.plot([r["top_k"] for r in group], [scale * r[key] for r in group], "o-",
                color=COLORS[i % len(COLORS)], label=f"N = {n}")
    ks = sorted({r["top_k"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (selected components)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs N and K (cf. Fig. 3)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _trials(rows, path):
    plt = _pyplot()
    ordered = sorted(rows, key=lambda r: int(r["trial_id"]))  # KerasTuner's ids count up (widths may differ)
    errors = [100 * r["val_top1_error"] for r in ordered]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(range(1, len(errors) + 1), errors, "o", color=COLORS[0], label="trial")
    ax.plot(range(1, len(errors) + 1), np.minimum.accumulate(errors), "-", color=COLORS[1], label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("validation error per trial", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _groups(rows, key):
    keys = sorted({r[key] for r in rows})
    return [(value, [r for r in rows if r[key] == value]) for value in keys]


def _save(fig, path):
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    _pyplot().close(fig)
    storage.write_bytes(path, image.getvalue())
    return path
