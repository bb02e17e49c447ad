"""The options of a training run, each declared once: `OPTIONS` = the training options + the model's.

The training options are declared here (`TRAINING_OPTIONS`); the model options are
`gmsop_keras.models.options.MODEL_OPTIONS`, declared beside `build_model` and not repeated
here. From `OPTIONS` come the commands' flags (`gmsop_keras.cli.arguments`), the YAML keys and
their checks (`gmsop_keras.training.config`), the keys of a run's config.yaml and what a run
saved before an option existed did (`gmsop_keras.training.saved_config`), and the
`build_model` keywords of a configuration (`MODEL_OPTION_KEYS`). To add a training option,
add one `Option(...)` line below (`resumable=True` if a run may be resumed with another
value); a preset may then set it (`gmsop_keras.models.presets`). Plain Python: no Keras.
"""

from gmsop_keras.models.options import MODEL_OPTIONS, Option
from gmsop_keras.models.presets import NAMES as PRESET_NAMES
from pipelines.augmentations import AUGMENTATIONS

TRAINING_OPTIONS = (
    Option("dataset", "str", "synthetic", "imagenet64 | places365 | synthetic | a folder of TFRecords"),
    Option("data_dir", "str", None, "converted TFRecords (python -m pipelines.convert); synthetic: cache folder",
           resumable=True),
    Option("backbone", "str", "resnet18", "resnet18 | resnet50 | wrn-36-2 | an ImageNet ResNet-50 of the seed family"),
    Option("head", "str", None, "gap, gap-512, sr-sop, psr-sop, ave-sop-16, gm-sop-16-8, gm-gap-N-K, netvlad-64, "
           "sg-moe-16-8, ... (default: gm-sop-16-8; a seed-family ImageNet backbone's own head)"),
    Option("preset", "str", "default", "a consistent set of switches: default (this library's measured "
           "choices), paper (the paper's text), official (the authors' code, with its schedules)",
           choices=PRESET_NAMES),
    Option("recipe", "str", None, "whose schedule for this model and dataset (default: the preset's), or none",
           choices=("paper", "official", "none")),
    Option("epochs", "int", None, "total epochs (default: the recipe's); a finished run re-run with more continues",
           low=1, resumable=True),
    Option("stages", "ints", None, "step schedule: epochs at lr, lr*decay, ... (e.g. 40 10 5 5)", low=1,
           resumable=True),
    Option("batch_size", "int", None, "global batch size, split across replicas", low=1),
    Option("lr", "float", None, "initial learning rate", low=0, low_open=True),
    Option("lr_decay", "float", None, "factor at every stage boundary (0.1)", low=0, high=1, low_open=True),
    Option("momentum", "float", None, "SGD momentum (0.9)", low=0, high=1, high_open=True),
    Option("weight_decay", "float", None, "weight decay (paper 5e-4, official code 1e-4)", low=0),
    Option("weight_decay_mode", "str", None, "coupled: L2 term wd * w added to the gradient before the momentum "
           "(paper, official code); decoupled: Keras' decay of wd / (1 - momentum) per step outside it",
           choices=("decoupled", "coupled")),
    Option("decay_norms_and_biases", "bool", None, "decay BatchNorm scales/offsets and biases too (official code)"),
    Option("steps_per_epoch", "int", None, "train this many steps per epoch (short runs)", low=1),
    Option("validation_steps", "int", None, "evaluate on this many batches only", low=1, resumable=True),
    Option("model_dir", "str", None, "checkpoints, logs, plots and the resolved config "
           "(default: runs/<dataset>-<backbone>-<head>)"),
    Option("seed", "int", 0, "seed of the weights, the gate noise and the data order", low=0),
    Option("deterministic", "bool", False, "the same numbers twice from the same --seed: TensorFlow op "
           "determinism on top of the fixed seeds (README, Training)"),
    Option("mixed_precision", "bool", False, "mixed_float16 (second-order parts, gate and classifier stay float32)"),
    Option("jit_compile", "str", "auto", "XLA: auto = on for one GPU, off on a CPU and under a distribution "
           "strategy (where Keras 3.15 cannot compile)", choices=("auto", "on", "off"), resumable=True),
    Option("strategy", "str", "auto", "auto = every visible GPU; none; mirrored; multi-worker (TF_CONFIG or SLURM)",
           choices=("auto", "none", "mirrored", "multi-worker"), resumable=True),
    Option("slurm_port_base", "int", 8888, "multi-worker under SLURM: task k of a node listens on this port + k",
           low=1024, high=65535, resumable=True),
    Option("slurm_gpus_per_task", "int", None, "multi-worker under SLURM: give each task this many of its node's "
           "GPUs (default: as srun binds them)", low=0, resumable=True),
    # --help lists the model options here (MODEL_OPTIONS), then these:
    Option("export", "str", None, "export a SavedModel to saved_models/NAME at the end", resumable=True),
    Option("augment", "str", None, "training augmentation (default: auto = flip; Places365 random 96 crop + "
           "flip); chrabaszcz = the starred rows of Table 3: each image and its mirror once per epoch "
           "(an epoch of 2N images), pad 4 + random crop", choices=("auto",) + AUGMENTATIONS),
    Option("cache", "bool", False, "keep the training records in memory", resumable=True),
    Option("verbose", "str", "auto", "progress: auto = Keras' bar on a terminal, else a line every --log-every steps",
           choices=("auto", "0", "1", "2"), resumable=True),
    Option("log_every", "int", 100, "when not on a terminal, print a progress line every N steps", low=1,
           resumable=True),
)
_OUTPUTS = [option.name for option in TRAINING_OPTIONS].index("export")
# The model options the commands take (`sop_channels` is for Python callers of build_model only).
COMMAND_MODEL_OPTIONS = tuple(option for option in MODEL_OPTIONS if option.flag)
OPTIONS = TRAINING_OPTIONS[:_OUTPUTS] + COMMAND_MODEL_OPTIONS + TRAINING_OPTIONS[_OUTPUTS:]

BY_NAME = {option.name: option for option in OPTIONS}
# A configuration's value of an option it does not set (the YAML keys are these names).
DEFAULTS = {option.name: option.config_default for option in OPTIONS}
RESUMABLE_KEYS = tuple(option.name for option in OPTIONS if option.resumable)
MODEL_OPTION_KEYS = tuple(option.name for option in COMMAND_MODEL_OPTIONS)
# Keys that recipes add beside the options (the synthetic set's size).
RECIPE_KEYS = ("synthetic",)
