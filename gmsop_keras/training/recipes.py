"""Training recipes as one table, stage scaling, and the learning-rate schedule they imply.

A recipe row is keyed by (dataset, backbone, head kind) and gives the stage lengths of a step
schedule (epochs at lr, lr * decay, lr * decay^2, ...), the initial learning rate, the decay,
the batch size, the dropout and the SGD settings of one source: `"paper"` (the paper's text,
Sec. 3.2-3.4), `"official"` (the authors' MatConvNet code, github.com/ZilinGao/GM-SOP, file
and line of each value in the row's `cites`) or `"project"` (this library's own rows for the synthetic set and for
folders, which neither source covers). `python -m gmsop_keras.fit --recipe paper|official`
(or the `--preset` that names one) picks the row for the run; explicit flags override it.

Head kinds: `gap` (GAP, parametric GAP `gap-D`, `ave-gap-N`), `gm-gap` (gated GAP mixtures),
`sop` (`sr-sop`, `psr-sop`), `gm-sop` (`gm-sop-N-K`, `ave-sop-N`). A row's head may also be
one exact head name (`gap-8256` on Places365). `*` matches anything; the first matching row
of the source wins, so specific rows come first. Where the official code has no row for a
dataset or backbone (Places365, every ResNet-50 model), the paper's row applies; a head the
official code does not have takes the official row of its kind (`psr-sop` the SR-SOP
baseline's, `ave-sop-N` GM-SOP's, `gap-D` and `ave-gap-N` GAP's).
"""

import dataclasses

from gmsop_keras.models.names import parse_head

SOURCES = ("paper", "official")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One row: a step schedule and the SGD settings it was run with.

    `dropout` None means the model's own (0.2; 0.4 for second-order heads on WRN-36-2),
    which is what the source used where it does not state a value. `cites` gives the source
    of each value that is not None (`{field: source}`, the forms of
    `gmsop_keras.models.presets.SOURCES`); `cite(field)` reads it.
    """

    stages: tuple
    lr: float
    batch_size: int = 256
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float | None = None
    source: str = "paper"
    cites: tuple = dataclasses.field(default=(), compare=False, repr=False)

    def settings(self):
        """The row as configuration values (stages as a list)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("source", "cites")}
        values["stages"] = list(self.stages)
        return values

    def cite(self, field):
        """The source of the row's value of `field` (KeyError: none recorded)."""
        return dict(self.cites)[field]


OFFICIAL = "5922792"  # the official repository's newest commit (2019-08-05), the one read
# The paper's SGD settings for every model (Sec. 3.1).
_PAPER_SGD = (
    ("batch_size", 'paper Sec. 3.1: "with batchsize of 256 and momentum of 0.9"'),
    ("momentum", 'paper Sec. 3.1: "with batchsize of 256 and momentum of 0.9"'),
    ("weight_decay", 'paper Sec. 3.1: "The parameter of weight decay is set to 5e-4"'),
)


def _paper(stages, lr, section, words):
    """A row of the paper's text: `words` (Sec. `section`) give the stages, rate and decay."""
    schedule = f'paper Sec. {section}: "{words}"'
    cites = (("stages", schedule), ("lr", schedule), ("lr_decay", schedule)) + _PAPER_SGD
    return Recipe(stages, lr, cites=cites)


def _official(stages, lr, script, lines, batch_size=256, dropout=None):
    """A row of an official script (`examples/GM/<script>.m`); `lines` maps a field to
    (line number, the line's code) at commit `OFFICIAL`. Every official script: momentum
    0.9, weightDecay 1e-4 on every parameter, decay 0.1 (the rate vector's steps)."""
    lines = dict(lines, lr_decay=lines["lr"], stages=lines["lr"])
    cites = tuple((field, f'official examples/GM/{script}.m:{number} @ {OFFICIAL} "{code}"')
                  for field, (number, code) in lines.items())
    return Recipe(stages, lr, batch_size=batch_size, weight_decay=1e-4, dropout=dropout, source="official",
                  cites=cites)


_SGD_LINES = {
    # script: (momentum, batch size, weight decay) lines
    "cnn_init_resnet_baseline": (210, 211, 213, "128 * 2"),
    "cnn_init_resnet_GM": (370, 371, 373, "128 * 2"),
    "cnn_init_WRN_baseline": (230, 231, 233, "150"),
    "cnn_init_WRN_GM": (379, 380, 382, "150"),
}


def _script_lines(script, lr_line, lr_code, dropout_line=None):
    momentum, batch, decay, batch_code = _SGD_LINES[script]
    lines = dict(lr=(lr_line, lr_code), momentum=(momentum, "net.meta.trainOpts.momentum = 0.9 ;"),
                 batch_size=(batch, f"net.meta.trainOpts.batchSize = {batch_code};"),
                 weight_decay=(decay, "net.meta.trainOpts.weightDecay = 0.0001 ;"))
    if dropout_line:
        lines["dropout"] = dropout_line
    return lines


_MEASURED_SYNTHETIC = ('library choice (measured: benchmarks/BENCHMARKS.md "Accuracy: GM-SOP against GAP on '
                       'the synthetic set")')
_FOLDER_CHOICE = "library choice (unmeasured: gmsop_keras/training/recipes.py, FOLDER: a starting point)"
_PAPER_DECAY = 'paper Sec. 3.2: "The initial learning rates are set to 0.15 and 0.1 with decay rate of 0.1"'
_PROJECT_SGD = (("lr_decay", _PAPER_DECAY),) + _PAPER_SGD[1:]

# The built-in synthetic set: the README's main job, whose validation error over three seeds
# benchmarks/BENCHMARKS.md gives (bench_accuracy.py), about five minutes on an idle 2-core CPU.
SYNTHETIC_SIZE = dict(num_classes=10, train_per_class=400, val_per_class=100, image_size=32)
SYNTHETIC = Recipe((4, 2), 0.05, batch_size=64, source="project", cites=(
    ("stages", _MEASURED_SYNTHETIC), ("lr", _MEASURED_SYNTHETIC), ("batch_size", _MEASURED_SYNTHETIC)) + _PROJECT_SGD)
# A converted folder of unknown size: a 30-epoch three-step schedule, the paper's SGD settings,
# and the paper's ImageNet-64 rate scaled to a batch of 128 (0.1 x 128 / 256). A starting
# point, not a measured one: give --stages and --lr for a real dataset.
FOLDER = Recipe((20, 5, 5), 0.05, batch_size=128, source="project", cites=(
    ("stages", _FOLDER_CHOICE), ("lr", _FOLDER_CHOICE), ("batch_size", _FOLDER_CHOICE)) + _PROJECT_SGD)

_LR = "lr =  {} * [0.1 * ones(1,{}), 0.01*ones(1,{}), 0.001*ones(1,{})"
RECIPES = (
    # (dataset, backbone, head kind or name, recipe)
    ("synthetic", "*", "*", SYNTHETIC),
    ("folder", "*", "*", FOLDER),
    ("places365", "*", "gap-8256", _paper((35, 10, 10, 5), 0.05, "3.4", "ResNet-18-8256d and remaining ones are "
                                          "trained within {35, 10, 10, 5} and {25, 5, 5, 5} epochs, and the initial "
                                          "learning rates are set to 0.05 and 0.1 with decay rate of 0.1")),
    ("places365", "*", "*", _paper((25, 5, 5, 5), 0.1, "3.4", "ResNet-18-8256d and remaining ones are trained "
                                   "within {35, 10, 10, 5} and {25, 5, 5, 5} epochs, and the initial learning rates "
                                   "are set to 0.05 and 0.1 with decay rate of 0.1")),
    ("imagenet64", "resnet18", "sop", _paper((20, 5, 5, 5, 5), 0.15, "3.2", "We train SR-SOP (or parametric SR-SOP) "
                                             "and Ave-SOP-16 (or GM-SOP-16-8) within {20,5,5,5,5} and {40,10,5,5} "
                                             "epochs. The initial learning rates are set to 0.15 and 0.1")),
    ("imagenet64", "resnet18", "gm-sop", _paper((40, 10, 5, 5), 0.1, "3.2", "We train SR-SOP (or parametric SR-SOP) "
                                                "and Ave-SOP-16 (or GM-SOP-16-8) within {20,5,5,5,5} and {40,10,5,5} "
                                                "epochs. The initial learning rates are set to 0.15 and 0.1")),
    # The sentence before it (GM-GAP and the baselines) is cut by Table 3 in the seed's text.
    ("imagenet64", "resnet18", "*", _paper((50, 15, 10), 0.075, "3.2", "{50, 15, 10} epochs, while the initial "
                                           "learning rate is set to 0.075 with decay rate of 0.1")),
    # The paper gives WRN-36-2 no schedule of its own, so it takes the ResNet-50 rule.
    ("imagenet64", "*", "gm-sop", _paper((50, 15, 10), 0.1, "3.3", "All ResNet-50 based methods are trained within "
                                         "{50, 15, 10} epochs, and initial learning rates with decay rate of 0.1 are "
                                         "set to 0.1 and 0.075 for our GM-SOP and remaining ones")),
    ("imagenet64", "*", "*", _paper((50, 15, 10), 0.075, "3.3", "All ResNet-50 based methods are trained within "
                                    "{50, 15, 10} epochs, and initial learning rates with decay rate of 0.1 are set "
                                    "to 0.1 and 0.075 for our GM-SOP and remaining ones")),
    # The ResNet-18 baselines: no dropout (the representation goes straight to the classifier).
    ("imagenet64", "resnet18", "gap", _official((50, 15, 10), 0.075, "cnn_init_resnet_baseline", _script_lines(
        "cnn_init_resnet_baseline", 201, "lr =  0.75*[0.1 * ones(1,50), 0.01*ones(1,15), 0.001*ones(1,10)] ;"))),
    ("imagenet64", "resnet18", "sop", _official((40, 10, 5, 5), 0.15, "cnn_init_resnet_baseline", _script_lines(
        "cnn_init_resnet_baseline", 204, _LR.format("1.5", 40, 10, 5) + ", 1e-4 * ones(1,5)] ;"))),
    ("imagenet64", "resnet18", "gm-gap", _official((50, 15, 10), 0.075, "cnn_init_resnet_GM", _script_lines(
        "cnn_init_resnet_GM", 362, "lr =  0.75*[0.1 * ones(1,50), 0.01*ones(1,15), 0.001*ones(1,10)] ;",
        (318, "drop_rate = 0.2;")), dropout=0.2)),
    ("imagenet64", "resnet18", "gm-sop", _official((40, 10, 5, 5), 0.1, "cnn_init_resnet_GM", _script_lines(
        "cnn_init_resnet_GM", 364, _LR.format("1", 40, 10, 5) + ", 1e-4 * ones(1,5)] ;", (318, "drop_rate = 0.2;")),
        dropout=0.2)),
    # No official ResNet-50 row: the `ResNet50-GM-SOP` schedule of cnn_init_resnet_GM.m (commits
    # 5533a61 to c2f2a1d, removed by abd00f0 "rm res50") was never reachable (the script refuses
    # that model type, lines 20-21) and built 96-64 components; the paper's row applies.
    # The WRN baselines (not reached from cnn_imagenet64.m either): `opts.dropout = false`
    # (cnn_init_WRN_baseline.m:8), so no dropout on either.
    ("imagenet64", "wrn-36-2", "gap", _official((20, 10, 10), 0.1, "cnn_init_WRN_baseline", _script_lines(
        "cnn_init_WRN_baseline", 223, "lr =  1  *[0.1 * ones(1,20), 0.01*ones(1,10), 0.001*ones(1,10)] ;"),
        batch_size=150)),
    ("imagenet64", "wrn-36-2", "sop", _official((10, 10, 10), 0.1, "cnn_init_WRN_baseline", _script_lines(
        "cnn_init_WRN_baseline", 225, "lr =  1 * [0.1 * ones(1,10), 0.01*ones(1,10), 0.001*ones(1,10)] ;"),
        batch_size=150)),
    ("imagenet64", "wrn-36-2", "gm-gap", _official((20, 10, 10), 0.1, "cnn_init_WRN_GM", _script_lines(
        "cnn_init_WRN_GM", 371, "lr =  1  *[0.1 * ones(1,20), 0.01*ones(1,10), 0.001*ones(1,10)] ;",
        (323, "drop_rate = 0.2;")), batch_size=150, dropout=0.2)),
    ("imagenet64", "wrn-36-2", "gm-sop", _official((20, 10, 5, 5), 0.09, "cnn_init_WRN_GM", _script_lines(
        "cnn_init_WRN_GM", 373, "lr =  0.9 * [0.1 * ones(1,20), 0.01*ones(1,10), 0.001*ones(1,5), "
        "0.0001*ones(1,5)] ;", (325, "drop_rate = 0.4;")), batch_size=150, dropout=0.4)),
)


def head_kind(head):
    """`gap`, `gm-gap`, `sop` or `gm-sop`: the kind of head a recipe row names."""
    spec = parse_head(head)
    if spec.second_order:
        return "gm-sop" if spec.is_mixture else "sop"
    return "gm-gap" if spec.top_k is not None else "gap"


def find_recipe(dataset, backbone, head, source="paper"):
    """The recipe row of `source` for a dataset kind, backbone and head.

    `dataset` is `imagenet64`, `places365`, `synthetic` or `folder` (any other name gets the
    folder row). An `official` lookup
    falls back to the paper's row where the official code has none; the synthetic set and
    folders have the project's rows whatever the source.

    Raises:
        ValueError: an unknown source.
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {', '.join(SOURCES)}. Received: source={source!r}")
    kind = head_kind(head)
    rows = [row for row in RECIPES if row[3].source in (source, "project")]
    if source != "paper":
        rows += [row for row in RECIPES if row[3].source == "paper"]
    for row_dataset, row_backbone, row_head, recipe in rows:
        if (row_dataset == dataset and row_backbone in ("*", backbone)
                and row_head in ("*", kind, head)):
            return recipe
    return FOLDER  # a manifest naming a dataset of its own


def scale_stages(stages, epochs):
    """Stage lengths scaled proportionally to sum to `epochs`.

    Each stage gets its share `epochs * stage / sum(stages)` rounded down, but at least 1;
    the epochs still missing go one by one to the stages with the largest remainders
    (the earlier stage on a tie), and surplus epochs (from the at-least-1 rule) are taken
    from the stages above 1 with the smallest remainders (the later stage on a tie). With
    fewer epochs than stages, the first `epochs` stages keep one epoch each.

    >>> scale_stages((40, 10, 5, 5), 6)
    [3, 1, 1, 1]
    >>> scale_stages((50, 15, 10), 15)
    [10, 3, 2]
    """
    stages = list(stages)
    if epochs < len(stages):
        return [1] * epochs
    total = sum(stages)
    shares = [epochs * s / total for s in stages]
    scaled = [max(1, int(share)) for share in shares]
    order = range(len(stages))
    while sum(scaled) < epochs:
        i = max(order, key=lambda j: (shares[j] - scaled[j], -j))
        scaled[i] += 1
    while sum(scaled) > epochs:
        i = min((j for j in order if scaled[j] > 1), key=lambda j: (shares[j] - scaled[j], -j))
        scaled[i] -= 1
    return scaled


def step_schedule(lr, stages, steps_per_epoch, lr_decay=0.1):
    """Keras' piecewise-constant schedule: `lr` for `stages[0]` epochs, then times `lr_decay`.

    Epochs past the last stage stay at the last stage's rate.
    """
    import keras

    # Keras switches after a boundary (step > boundary), and the optimizer counts from 0:
    # the first step of epoch e is step e * steps_per_epoch, so the boundary is one before.
    boundaries, epoch = [], 0
    for length in stages[:-1]:
        epoch += length
        boundaries.append(epoch * steps_per_epoch - 1)
    values = [lr * lr_decay**i for i in range(len(stages))]
    if not boundaries:
        return lr
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
