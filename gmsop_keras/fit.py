"""python -m gmsop_keras.fit: train a model of the paper on one device, many GPUs or many machines.

    python -m gmsop_keras.fit                                    # built-in synthetic set, a few minutes on a CPU
    python -m gmsop_keras.fit --dataset imagenet64 --data-dir data/imagenet64 --head gm-sop-16-8
    python -m gmsop_keras.fit --dataset places365 --data-dir data/places365 --head gm-gap-16-8

The model directory receives: `config.yaml` (resolved configuration), `backup/` (resume point:
re-running the same command after a crash continues from the last finished epoch; re-running a
finished run says so and trains nothing; a larger `--epochs` continues it, a smaller one is
refused), `log.csv`, `tensorboard/`, `best.keras` (best validation top-1), `final.keras`, `metrics.json` (written
last), and for gated mixtures `component_usage.csv` with a bar chart per epoch in
`component_usage/`. Epochs are counted from 1 everywhere. `gmsop_keras.training.run_directory` describes the
order in which these files are written and why a kill at any moment loses at most one epoch.
"""

import os
import sys

from gmsop_keras.cli.errors import debug_requested, run_cli
from gmsop_keras.cli.startup import load_tensorflow
from gmsop_keras.cli.arguments import resolve_config
from gmsop_keras.training.preflight import finished_line, open_run, percent, preflight


def main(argv=None):
    # Everything that can be checked without TensorFlow is checked first: flags, names, the
    # data folder and the model directory, so that a mistake answers at once and writes nothing.
    config = resolve_config(argv)
    debug = debug_requested(argv)
    data_dir, manifest, finished = preflight(config)
    if finished:
        print(finished_line(config, finished))
        return 0
    run = open_run(config, data_dir, manifest, debug)
    with run.lock():  # before TensorFlow loads: a second fit on this directory is refused at once
        load_tensorflow(debug)
        # Deferred: the training library and serving import TensorFlow, loaded only after the checks above.
        from gmsop_keras.serving.export import export_model  # noqa: PLC0415
        from gmsop_keras.training import trainer  # noqa: PLC0415

        summary = trainer.train_in(config, run, data_dir, manifest)
        if summary is None:  # a worker of a multi-worker run: the chief reports
            return 0
        if config["export"]:
            # From the saved file: the export is exactly final.keras, built on this process alone (a
            # model trained under MultiWorkerMirroredStrategy reads its variables with the other workers).
            path = export_model(trainer.load_final(run), os.path.join("saved_models", config["export"]),
                                manifest=summary.pop("manifest"))
            print(f"exported {path}")
        print(
            f"validation: top-1 error {percent(summary['top1_error'])}, top-5 error "
            f"{percent(summary['top5_error'])} ({config['dataset']}, {config['backbone']}, {config['head']}); "
            f"model dir {run.path}"
        )
        return 0


def console_main():
    """The `gmsop-fit` console script."""
    sys.exit(run_cli(main, interrupted="interrupted: re-run the same command to resume from the last finished epoch",
                     output_flag="--model-dir"))


if __name__ == "__main__":
    console_main()
