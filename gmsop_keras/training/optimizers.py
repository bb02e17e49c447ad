"""SGD with the weight decay of the paper and the official code: an L2 term in the gradient."""

import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gmsop_keras")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """Momentum SGD whose weight decay is an L2 term added to the gradient before the momentum.

    For every decayed variable w with gradient g, the step is Keras' SGD step on
    g + l2 * w: `v <- momentum * v - lr * (g + l2 * w)`, `w <- w + v` (nesterov likewise). This
    is the gradient of `loss + l2 / 2 * ||w||^2`, as in the paper (L2 5e-4) and the official
    MatConvNet code (`vl_taccum(1/batchSize, der, weightDecay, value)` before the momentum,
    1e-4 on every parameter). Keras' own `weight_decay` instead shrinks w outside the
    momentum (decoupled); it is not used here.

    Args:
        l2: the L2 coefficient (the paper's "weight decay").
        l2_exempt: variable-name patterns (`re.search` on `variable.name`, as Keras'
            `exclude_from_weight_decay(var_names=...)`) that get no L2 term, e.g.
            `("gamma", "beta", "bias")`; empty: every trainable variable is decayed.
        **kwargs: `keras.optimizers.SGD`'s arguments (`learning_rate`, `momentum`, ...),
            except `weight_decay`.

    Example:

    >>> optimizer = CoupledWeightDecaySGD(learning_rate=0.1, momentum=0.9, l2=5e-4)
    """

    def __init__(self, l2=0.0, l2_exempt=(), **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "`weight_decay` (decoupled) cannot be combined with `l2` (coupled); use one of "
                f"keras.optimizers.SGD(weight_decay=...) or CoupledWeightDecaySGD(l2=...). "
                f"Received: weight_decay={kwargs['weight_decay']}"
            )
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        super().__init__(**kwargs)
        self.l2 = float(l2)
        self.l2_exempt = tuple(l2_exempt)
        self._exempt_pattern = re.compile("|".join(self.l2_exempt)) if self.l2_exempt else None

    def decays(self, variable):
        """Whether `variable` gets the L2 term."""
        return bool(self.l2) and not (self._exempt_pattern and self._exempt_pattern.search(variable.name))

    def update_step(self, gradient, variable, learning_rate):
        if self.decays(variable):
            gradient = ops.add(
                ops.cast(gradient, variable.dtype), ops.multiply(ops.cast(self.l2, variable.dtype), variable)
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        base_config = super().get_config()
        config = {"l2": self.l2, "l2_exempt": list(self.l2_exempt)}
        return {**base_config, **config}
