"""The paper's training recipes (Sec. 3) as data, and the learning-rate schedule they imply.

A recipe is the stage lengths of a step schedule (epochs at lr, lr/10, lr/100, ...), the
initial learning rate, and the shared SGD settings: batch 256, momentum 0.9, weight decay
5e-4 (paper text; the official code used 1e-4). `python -m gmsop_keras.fit --recipe paper`
picks the recipe for the chosen dataset, backbone and head; explicit flags override it.
"""

PAPER_DEFAULTS = dict(batch_size=256, momentum=0.9, weight_decay=5e-4, lr_decay=0.1)

# The built-in synthetic set: the run measured in benchmarks/BENCHMARKS.md (GM-SOP-16-8
# 0.7% top-1 error, GAP 71.9%), about five minutes on a 2-core CPU.
SYNTHETIC = dict(
    stages=(4, 2), lr=0.05, batch_size=64, momentum=0.9, weight_decay=5e-4, lr_decay=0.1,
    synthetic=dict(num_classes=10, train_per_class=400, val_per_class=100, image_size=32),
)


def paper_recipe(dataset, backbone, head):
    """Stage lengths, learning rate and SGD settings for a row of the paper's tables.

    ImageNet-64 (Sec. 3.2-3.3): GM-GAP and the first-order baselines {50, 15, 10} epochs
    from 0.075; SR-SOP and parametric SR-SOP {20, 5, 5, 5, 5} from 0.15; Ave-SOP and
    GM-SOP {40, 10, 5, 5} from 0.1; every ResNet-50 model {50, 15, 10}, from 0.1 for
    GM-SOP and 0.075 otherwise. The paper gives no schedule of its own for WRN-36-2;
    it takes the ResNet-50 rule. Places365 (Sec. 3.4): ResNet-18-8256d {35, 10, 10, 5}
    from 0.05, the others {25, 5, 5, 5} from 0.1.
    """
    from gmsop_keras.names import parse_head

    if dataset == "synthetic":
        return dict(SYNTHETIC)
    spec = parse_head(head)
    gated_or_averaged_sop = spec.second_order and spec.is_mixture
    if dataset == "places365":
        if head == "gap-8256":
            return dict(PAPER_DEFAULTS, stages=(35, 10, 10, 5), lr=0.05)
        return dict(PAPER_DEFAULTS, stages=(25, 5, 5, 5), lr=0.1)
    if backbone != "resnet18":
        lr = 0.1 if gated_or_averaged_sop else 0.075
        return dict(PAPER_DEFAULTS, stages=(50, 15, 10), lr=lr)
    if gated_or_averaged_sop:
        return dict(PAPER_DEFAULTS, stages=(40, 10, 5, 5), lr=0.1)
    if spec.second_order:
        return dict(PAPER_DEFAULTS, stages=(20, 5, 5, 5, 5), lr=0.15)
    return dict(PAPER_DEFAULTS, stages=(50, 15, 10), lr=0.075)


def step_schedule(lr, stages, steps_per_epoch, lr_decay=0.1):
    """Keras' piecewise-constant schedule: `lr` for `stages[0]` epochs, then times `lr_decay`."""
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
