"""python -m tuning.search STUDY: the paper's ablations (Sec. 3.2) as KerasTuner searches.

    python -m tuning.search alpha                  # Fig. 2: GM-GAP-16-4, alpha in {0, 1, 10, 100, 1000}
    python -m tuning.search nk                     # Fig. 3: GM-GAP, N in {4, 8, 16, 32} x K in {1, 2, 4, 8, 16}
    python -m tuning.search free --head-family gm-sop --max-trials 20   # Bayesian over alpha, N, K, lr
    python -m tuning.search nk --dataset imagenet64 --data-dir data/imagenet64 --epochs 75

The study folder (`--directory`, default `runs/tuning/<study>`) receives:
`keras_tuner/` (KerasTuner's state and one folder per trial, with its best
weights and `component_usage.csv`; re-running the same command resumes and runs
no finished trial again), `study.json` (what the folder was made for),
`results.csv` and `results.md` (one row per trial) and the figures
(`tuning.plots`). Training is `python -m gmsop_keras.fit`'s: the same
configuration, input pipeline, model builder, optimizer and schedule.
"""

import argparse
import importlib.util
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (gmsop_keras imports Keras)

from gmsop_keras.cli.arguments import add_option_arguments, resolve_config
from gmsop_keras.cli.errors import add_debug_flag, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.training.data import input_statistics, locate_data, make_inputs, prepare_data
from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.options import OPTIONS
from pipelines import storage
from tuning.plots import plot_study
from tuning.studies import STUDIES, nk_pairs, search_space

# `fit`'s options (gmsop_keras.training.options.OPTIONS) that a study takes as flags and passes on to
# `resolve_config` as they are: all but those the study sets itself (the head and alpha are
# searched, the folder is --directory) and those of a single run (export, log lines).
STUDY_OWNS = ("head", "balance_loss_weight", "model_dir", "export", "log_every")
# May differ between a run and its resumption without changing what the trials are.
RESUMABLE_KEYS = ("strategy", "verbose", "data_dir", "model_dir", "max_trials", "cache")
STUDY_FILE = "study.json"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description="Ablations of GM-SOP (paper Sec. 3.2) with KerasTuner: alpha (Fig. 2), N and K (Fig. 3), "
        "or a free Bayesian / Hyperband search. Re-running a command resumes its search.",
    )
    add = parser.add_argument
    add("study", choices=tuple(STUDIES), help="alpha: Fig. 2; nk: Fig. 3; free: Bayesian/Hyperband over alpha, N, K, lr")
    add("--directory", help="study folder: tuner state, results.csv/.md, plots (default: runs/tuning/STUDY)")
    add("--tuner", choices=("grid", "bayesian", "hyperband"), help="default: grid for alpha and nk, bayesian for free")
    add("--max-trials", type=int, help="grid: at most this many (default: all); bayesian: default 10")
    add("--overwrite", action="store_true", help="discard the folder's search and start again")
    add("--head-family", choices=("gm-gap", "gm-sop"), help="the mixture's components (default: gm-gap, as the paper)")
    add("--n", "--num-components", dest="num_components", type=int, nargs="+", metavar="N",
        help="N values (alpha: 16; nk, free: 4 8 16 32); with --k, every pair with K <= N")
    add("--k", "--top-k", dest="top_k", type=int, nargs="+", metavar="K",
        help="K values (alpha: 4; nk, free: 1 2 4 8 16)")
    add("--alphas", type=float, nargs="+", metavar="ALPHA",
        help="balance-loss weights to try (alpha: 0 1 10 100 1000; nk: 100)")
    add("--alpha-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="alpha as a float in [LOW, HIGH], log-sampled if LOW > 0 (free: 1 1000)")
    add("--lr-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="tune the learning rate in [LOW, HIGH], log-sampled (free: lr/4 to 4 lr; alpha, nk: fixed lr)")
    fit = parser.add_argument_group("training, as python -m gmsop_keras.fit")
    add_option_arguments(fit, fit_flags())
    add_debug_flag(parser)
    return parser


def fit_flags():
    """The names of `fit`'s options a study passes on (every option but `STUDY_OWNS`)."""
    return tuple(option.name for option in OPTIONS if option.name not in STUDY_OWNS)


def main(argv=None):
    args = build_parser().parse_args(argv)
    defaults = STUDIES[args.study]
    kind = args.tuner or defaults["tuner"]
    _check_flags(args, kind)
    family = args.head_family or defaults["head_family"]
    num_components = args.num_components or defaults["num_components"]
    top_k = args.top_k or defaults["top_k"]
    try:
        first_pair = nk_pairs(num_components, top_k)[0]  # no K <= N
    except ValueError as error:
        raise UsageError(str(error)) from None
    config = _fit_config(args, f"{family}-{first_pair}")
    load_tensorflow(args.debug)  # before KerasTuner, which loads it
    try:
        space = search_space(
            family, num_components, top_k, config["lr"],
            alphas=None if args.alpha_range else (args.alphas or defaults.get("alphas")),
            alpha_range=args.alpha_range or (None if args.alphas else defaults.get("alpha_range")),
            lr_range=args.lr_range or _default_lr_range(config["lr"], defaults),
        )
    except ValueError as error:  # the studies' own checks of the flags' values
        raise UsageError(str(error)) from None
    max_trials = args.max_trials or defaults.get("max_trials")
    # Deferred: each of these imports TensorFlow (Keras, KerasTuner), loaded only after the checks above.
    import keras  # noqa: PLC0415  (imports TensorFlow)

    from gmsop_keras.training.compile import keras_verbosity  # noqa: PLC0415  (imports TensorFlow)
    from gmsop_keras.training.distribute import make_strategy  # noqa: PLC0415  (imports TensorFlow)
    from tuning.hypermodel import GMSOPHyperModel  # noqa: PLC0415  (imports TensorFlow)
    from tuning.results import trial_dir, trial_rows, write_results  # noqa: PLC0415  (imports KerasTuner)
    from tuning.tuners import make_tuner  # noqa: PLC0415  (imports KerasTuner)

    strategy = make_strategy(config["strategy"])
    replicas = strategy.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise UsageError(f"--batch-size {config['batch_size']} is not divisible by the {replicas} replicas; "
                         f"use a multiple of {replicas}")
    directory = config["model_dir"]
    settings = {"study": args.study, "tuner": kind, "space": space.get_config(), "config": config,
                "max_trials": max_trials}
    _check_directory(directory, settings, overwrite=args.overwrite)
    keras.utils.set_random_seed(config["seed"])
    data_dir, manifest = locate_data(config)
    train, validation, manifest, steps_per_epoch = make_inputs(
        config, data_dir, prepare_data(config, data_dir, manifest))
    hypermodel = GMSOPHyperModel(config, train.element_spec[0].shape[1:], manifest["num_classes"], steps_per_epoch,
                                 statistics=input_statistics(manifest, data_dir))
    tuner = make_tuner(kind, hypermodel, space, directory, max_trials=max_trials, max_epochs=config["epochs"],
                       strategy=strategy, seed=config["seed"], overwrite=args.overwrite)
    _write_settings(directory, settings)
    before = {trial_id: trial.status for trial_id, trial in tuner.oracle.trials.items()}
    tuner.search(train, validation_data=validation, epochs=config["epochs"], steps_per_epoch=steps_per_epoch,
                 validation_steps=config["validation_steps"], verbose=keras_verbosity(config["verbose"]))

    rows = trial_rows(tuner, args.study)
    _, md_path = write_results(rows, directory)
    plots = plot_study(args.study, rows, directory, {t: trial_dir(tuner, t) for t in tuner.oracle.trials})
    ran = [t for t, trial in tuner.oracle.trials.items() if before.get(t) != trial.status]  # new or re-run
    _report(args.study, rows, len(ran), md_path, plots)
    return 0


def _check_flags(args, kind):
    if args.alphas and args.alpha_range:
        raise UsageError("give --alphas (a list) or --alpha-range (an interval), not both")
    if kind == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise UsageError("--tuner bayesian needs scikit-learn (KerasTuner's Gaussian process): "
                         "pip install scikit-learn, or use --tuner hyperband")
    if kind == "hyperband" and args.max_trials:
        raise UsageError("--max-trials does not apply to --tuner hyperband: its budget is --epochs per model")
    if args.max_trials is not None and args.max_trials < 1:
        raise UsageError(f"--max-trials must be positive, got {args.max_trials}")


def _fit_config(args, head):
    """`fit`'s resolved configuration for these flags and the study's head (recipe, defaults, checks)."""
    argv = ["--head", head, "--model-dir", args.directory or os.path.join("runs", "tuning", args.study)]
    for name in fit_flags():
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag] + [str(v) for v in (value if isinstance(value, list) else [value])]
    config = resolve_config(argv)
    if config["epochs"] < 1:
        raise UsageError(f"--epochs must be positive, got {config['epochs']}")
    return config


def _default_lr_range(lr, defaults):
    scale = defaults.get("lr_scale")
    return (lr / scale, lr * scale) if scale else None


def _check_directory(directory, settings, overwrite=False):
    """Refuses to resume a folder whose search was made with other settings (KerasTuner would keep its old space)."""
    path = storage.join(directory, STUDY_FILE)
    if overwrite or not storage.isfile(path):
        return
    saved = json.loads(storage.read_text(path))
    now = json.loads(json.dumps(settings))
    differences = [key for key in ("study", "tuner", "space") if saved.get(key) != now[key]]
    differences += [
        f"config.{k}" for k in sorted(set(saved.get("config", {})) | set(now["config"]))
        if k not in RESUMABLE_KEYS and saved.get("config", {}).get(k) != now["config"].get(k)
    ]
    if differences:
        raise UsageError(
            f"{directory} holds a search with other settings ({', '.join(differences[:5])} differ); "
            "use another --directory, repeat the original flags to resume it, or add --overwrite"
        )


def _write_settings(directory, settings):
    storage.makedirs(directory)
    storage.write_text(storage.join(directory, STUDY_FILE), json.dumps(settings, indent=2, sort_keys=True))


def _report(study, rows, ran, md_path, plots):
    done = [r for r in rows if r["val_top1_error"] is not None]
    failed = [r for r in rows if r["status"] not in ("COMPLETED",)]
    print(f"{study}: {len(rows)} trials ({ran} run by this command, {len(failed)} not completed); table: {md_path}")
    if failed:
        print(f"  not completed: {', '.join(r['trial_id'] + ' ' + r['status'] for r in failed)} (see the reason column)")
    if done:
        best = min(done, key=lambda r: r["val_top1_error"])
        print(f"  best: {best['head']}, alpha {best['balance_loss_weight']:g}, lr {best['lr']:g}: "
              f"validation top-1 error {100 * best['val_top1_error']:.2f}% (trial {best['trial_id']})")
    for path in plots:
        print(f"  plot: {path}")


def console_main():
    """The `gmsop-tune` console script."""
    sys.exit(run_cli(main, output_flag="--directory"))


if __name__ == "__main__":
    console_main()
