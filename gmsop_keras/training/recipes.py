"""Training recipes as one table, stage scaling, and the learning-rate schedule they imply.

A recipe row is keyed by (dataset, backbone, head kind) and gives the stage lengths of a step
schedule (epochs at lr, lr * decay, lr * decay^2, ...), the initial learning rate, the decay,
the batch size, the dropout and the SGD settings of one source: `"paper"` (the paper's text,
Sec. 3.2-3.4), `"official"` (the authors' MatConvNet code, github.com/ZilinGao/GM-SOP, file
named beside each row) or `"project"` (this library's own rows for the synthetic set and for
folders, which neither source covers). `python -m gmsop_keras.fit --recipe paper|official`
(or the `--preset` that names one) picks the row for the run; explicit flags override it.

Head kinds: `gap` (GAP, parametric GAP `gap-D`, `ave-gap-N`), `gm-gap` (gated GAP mixtures),
`sop` (`sr-sop`, `psr-sop`), `gm-sop` (`gm-sop-N-K`, `ave-sop-N`). A row's head may also be
one exact head name (`gap-8256` on Places365). `*` matches anything; the first matching row
of the source wins, so specific rows come first. Where the official code has no row for a
model (Places365, the averages, ResNet-50 baselines), the paper's row applies.
"""

import dataclasses

from gmsop_keras.models.names import parse_head

SOURCES = ("paper", "official")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One row: a step schedule and the SGD settings it was run with.

    `dropout` None means the model's own (0.2; 0.4 for second-order heads on WRN-36-2),
    which is what the source used where it does not state a value.
    """

    stages: tuple
    lr: float
    batch_size: int = 256
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float | None = None
    source: str = "paper"

    def settings(self):
        """The row as configuration values (stages as a list)."""
        values = dataclasses.asdict(self)
        del values["source"]
        values["stages"] = list(self.stages)
        return values


def _official(stages, lr, batch_size=256, dropout=None):
    # Every official script: momentum 0.9, weightDecay 1e-4 on every parameter, decay 0.1.
    return Recipe(stages, lr, batch_size=batch_size, weight_decay=1e-4, dropout=dropout, source="official")


# The built-in synthetic set: the README's main job, whose validation error over three seeds
# benchmarks/BENCHMARKS.md gives (bench_accuracy.py), about five minutes on an idle 2-core CPU.
SYNTHETIC_SIZE = dict(num_classes=10, train_per_class=400, val_per_class=100, image_size=32)
SYNTHETIC = Recipe((4, 2), 0.05, batch_size=64, source="project")
# A converted folder of unknown size: a 30-epoch three-step schedule, the paper's SGD settings,
# and the paper's ImageNet-64 rate scaled to a batch of 128 (0.1 x 128 / 256). A starting
# point, not a measured one: give --stages and --lr for a real dataset.
FOLDER = Recipe((20, 5, 5), 0.05, batch_size=128, source="project")

RECIPES = (
    # (dataset, backbone, head kind or name, recipe)
    ("synthetic", "*", "*", SYNTHETIC),
    ("folder", "*", "*", FOLDER),
    # Paper Sec. 3.4: "ResNet-18-8256d and remaining ones are trained within {35, 10, 10, 5}
    # and {25, 5, 5, 5} epochs, and the initial learning rates are set to 0.05 and 0.1".
    ("places365", "*", "gap-8256", Recipe((35, 10, 10, 5), 0.05)),
    ("places365", "*", "*", Recipe((25, 5, 5, 5), 0.1)),
    # Paper Sec. 3.2: GM-GAP and the first-order baselines "{50, 15, 10} epochs, ... 0.075";
    # "SR-SOP (or parametric SR-SOP) and Ave-SOP-16 (or GM-SOP-16-8) within {20, 5, 5, 5, 5}
    # and {40, 10, 5, 5} epochs. The initial learning rates are set to 0.15 and 0.1".
    ("imagenet64", "resnet18", "sop", Recipe((20, 5, 5, 5, 5), 0.15)),
    ("imagenet64", "resnet18", "gm-sop", Recipe((40, 10, 5, 5), 0.1)),
    ("imagenet64", "resnet18", "*", Recipe((50, 15, 10), 0.075)),
    # Paper Sec. 3.3 (ResNet-50; the paper gives WRN-36-2 no schedule of its own, so it takes
    # this rule): "{50, 15, 10}, ... 0.1 and 0.075 for our GM-SOP and remaining ones".
    ("imagenet64", "*", "gm-sop", Recipe((50, 15, 10), 0.1)),
    ("imagenet64", "*", "*", Recipe((50, 15, 10), 0.075)),
    # Official code, examples/GM/cnn_init_resnet_baseline.m: ResNet18-GAP
    # 0.75 * [0.1 x 50, 0.01 x 15, 0.001 x 10]; ResNet18-SR-SOP 1.5 * [0.1 x 40, ... x 10, 5, 5],
    # batch 128 * 2, no dropout (the baseline goes straight to the classifier).
    ("imagenet64", "resnet18", "gap", _official((50, 15, 10), 0.075)),
    ("imagenet64", "resnet18", "sop", _official((40, 10, 5, 5), 0.15)),
    # examples/GM/cnn_init_resnet_GM.m: ResNet18-GM-GAP 0.75 * [50, 15, 10];
    # ResNet18-GM-SOP 1 * [40, 10, 5, 5]; ResNet50-GM-SOP 1 * [50, 15, 10]; batch 256, drop 0.2.
    ("imagenet64", "resnet18", "gm-gap", _official((50, 15, 10), 0.075, dropout=0.2)),
    ("imagenet64", "resnet18", "gm-sop", _official((40, 10, 5, 5), 0.1, dropout=0.2)),
    ("imagenet64", "resnet50", "gm-sop", _official((50, 15, 10), 0.1, dropout=0.2)),
    # examples/GM/cnn_init_WRN_baseline.m: WRN-36-2-GAP 1 * [20, 10, 10]; WRN-36-2-SR-SOP
    # 1 * [10, 10, 10]; batch 150, dropout 0.2.
    ("imagenet64", "wrn-36-2", "gap", _official((20, 10, 10), 0.1, batch_size=150)),
    ("imagenet64", "wrn-36-2", "sop", _official((10, 10, 10), 0.1, batch_size=150, dropout=0.2)),
    # examples/GM/cnn_init_WRN_GM.m: WRN-36-2-GM-GAP 1 * [20, 10, 10], dropout 0.2;
    # WRN-36-2-GM-SOP 0.9 * [20, 10, 5, 5], dropout 0.4; batch 150.
    ("imagenet64", "wrn-36-2", "gm-gap", _official((20, 10, 10), 0.1, batch_size=150, dropout=0.2)),
    ("imagenet64", "wrn-36-2", "gm-sop", _official((20, 10, 5, 5), 0.09, batch_size=150, dropout=0.4)),
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
