"""`GMSOPHyperModel`: the paper's ablation knobs (alpha, N, K, lr, head family) over `fit`'s model.

The hypermodel does not define a network: `build` turns the hyperparameters into
a `fit` configuration (head `gm-gap-16-4`, `balance_loss_weight`, `lr`) and calls
`gmsop_keras.training.compile.build_and_compile`, i.e. `gmsop_keras.build_model` compiled with
the SGD, step schedule and top-1/top-5 metrics a `python -m gmsop_keras.fit` run
uses. Its hyperparameters are flat and have defaults:

| name                  | paper    | declared by `build` (when the tuner's space lacks it) |
| --------------------- | -------- | ----------------------------------------------------- |
| `head_family`         | -        | `"gm-gap"` or `"gm-sop"`, default: the config's head  |
| `nk`                  | N and K  | `"N-K"` pairs with K <= N, default: the config's head |
| `balance_loss_weight` | alpha    | float in [0, 1000], default: the config's (100)       |
| `lr`                  | -        | log-float in [lr/10, 10 lr], default: the config's    |

N and K are one hyperparameter, a choice among valid pairs, so that no tuner
ever proposes K > N; a value the tuner was given by hand that breaks K <= N
fails its trial with the reason instead of crashing the search.
"""

import keras
import keras_tuner

from gmsop_keras.models.names import parse_head
from gmsop_keras.models.options import MODEL_OPTIONS_BY_NAME, applicable_options
from gmsop_keras.models.presets import preset_values
from gmsop_keras.training.compile import build_and_compile
from gmsop_keras.training.options import MODEL_OPTION_KEYS
from tuning.studies import HEAD_FAMILIES, nk_pairs, parse_nk
from tuning.throughput import TrainingThroughput

# The tuned model option as build_model declares it (its default, paper's alpha 100, and bound >= 0).
ALPHA = MODEL_OPTIONS_BY_NAME["balance_loss_weight"]


class GMSOPHyperModel(keras_tuner.HyperModel):
    """A gated-mixture classifier of `gmsop_keras` with alpha, N, K, lr and head family tunable.

    Args:
        config: a resolved `fit` configuration (`gmsop_keras.training.config.resolve`);
            its `head` must be a gated mixture (`gm-gap-N-K` or `gm-sop-N-K`)
            and gives the defaults of `head_family` and `nk`; its
            `balance_loss_weight` (default 100) and `lr` give theirs.
        input_shape: `(H, W, 3)` of the training images.
        num_classes: classifier width.
        steps_per_epoch: training steps per epoch (for the step schedule).
        **kwargs: `name` and `tunable` of `keras_tuner.HyperModel`.

    Example:

    >>> hypermodel = GMSOPHyperModel(config, (64, 64, 3), 1000, steps_per_epoch=5000)
    >>> hp = keras_tuner.HyperParameters()
    >>> _ = hp.Fixed("nk", "16-4")
    >>> model = hypermodel.build(hp)  # resnet18 + gm-gap-16-4, compiled as fit does

    Reference:
        Wang et al., Global Gated Mixture of Second-order Pooling for Improving
        Deep Convolutional Neural Networks, NeurIPS 2018, Sec. 3.2.
    """

    def __init__(self, config, input_shape, num_classes, steps_per_epoch, statistics=None, **kwargs):
        super().__init__(**kwargs)
        spec = parse_head(config["head"])
        if not (spec.is_mixture and spec.top_k is not None):
            raise ValueError(
                f"`config['head']` must be a gated mixture, gm-gap-N-K or gm-sop-N-K. Received: head={config['head']!r}"
            )
        self.config = dict(config)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.steps_per_epoch = steps_per_epoch
        self.statistics = dict(statistics or {})  # `mean` / `std` of the input (training.input_statistics)
        self._family = f"gm-{spec.pooling}"
        self._nk = f"{spec.num_components}-{spec.top_k}"
        self._nk_values = sorted(set(nk_pairs()) | {self._nk}, key=parse_nk)
        alpha = config.get("balance_loss_weight")
        self._alpha = ALPHA.default if alpha is None else float(alpha)
        self._lr = float(config["lr"])

    def build(self, hp):
        family = hp.Choice("head_family", HEAD_FAMILIES, default=self._family)
        n, k = parse_nk(hp.Choice("nk", self._nk_values, default=self._nk))
        alpha = hp.Float(ALPHA.name, float(ALPHA.low), max(1000.0, self._alpha), default=self._alpha)
        lr = hp.Float("lr", self._lr / 10, self._lr * 10, sampling="log", default=self._lr)
        if k > n:
            raise keras_tuner.errors.FailedTrialError(
                f"top_k (K={k}) must be <= num_components (N={n}); this trial is skipped"
            )
        config = _for_head(self.config, f"{family}-{n}-{k}")
        config.update(balance_loss_weight=float(alpha), lr=float(lr))
        # Every trial starts from the same initial weights, whatever ran before it.
        keras.utils.set_random_seed(config["seed"])
        model = build_and_compile(config, self.input_shape, self.num_classes, self.steps_per_epoch, **self.statistics)
        # Create the optimizer's variables now, so that a checkpoint KerasTuner loads into this
        # model (Hyperband continuing a trial, `get_best_models`) restores the momentum and the
        # step count of the learning-rate schedule too, not only the weights.
        model.optimizer.build(model.trainable_variables)
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """`model.fit`, with training images/s added to the logs (and so to the trial's metrics)."""
        callbacks = [TrainingThroughput(self.config["batch_size"])] + list(callbacks or [])
        kwargs.setdefault("shuffle", False)  # the input pipeline shuffles
        return model.fit(*args, callbacks=callbacks, **kwargs)


def _for_head(config, head):
    """The study's configuration for a trial's head: the model switches of its preset that apply
    to that head (a study may move between gm-gap and gm-sop; `num_iterations` applies to the
    second only), and none that do not (build_model refuses them)."""
    config = dict(config, head=head)
    applies = applicable_options(config["backbone"], head, config.get("sop_baseline_bn", True) is not False)
    for key in MODEL_OPTION_KEYS:
        if key not in applies:
            config[key] = None
    for key, value in preset_values(config.get("preset") or "default", config["backbone"], head).items():
        if key in MODEL_OPTION_KEYS and config.get(key) is None:
            config[key] = value
    return config
