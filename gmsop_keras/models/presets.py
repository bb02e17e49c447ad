"""Presets: one name for a consistent set of departures from (or agreements with) the sources.

`python -m gmsop_keras.fit --preset default|paper|official` selects a row of `PRESETS`:

- `default`: this library's measured choices (README, "Departures"): decoupled weight decay
  with BatchNorm and biases exempt, standardised gate input, centred random gate init, the
  classifier BatchNorm starting at sqrt(128 / D), the paper's schedules.
- `paper`: the paper's text (5 Newton-Schulz iterations, L2 weight decay 5e-4 in the
  gradient, raw gate input, its schedules); where the text is silent (gate init, BatchNorm
  start and momentum, the SR-SOP baseline's BatchNorm), the official code's choice.
- `official`: the authors' MatConvNet code: 3 iterations, L2 1e-4 on every parameter through
  the momentum, gamma 1, constant gate init with random tie-break, no BatchNorm or dropout
  on the SR-SOP baseline, BatchNorm moving averages updated with weight 0.3, its schedules.
  Where these come from (github.com/ZilinGao/GM-SOP): `examples/cnn_train_GM_dag.m` updates a
  `'gradient'` parameter with `weightDecay * value` added to the gradient before the momentum,
  and a `'average'` one (BatchNorm moments) as `(1 - lr) * value + lr * batch moments`; the
  `examples/GM/cnn_init_*.m` scripts set the moments' `learningRate = 0.3` (so Keras momentum
  0.7), `weightDecay = 0.0001` and no per-parameter weight-decay exemption (MatConvNet's
  default factor 1, BatchNorm scales and offsets included), and `iterNum` 3.

A preset names the recipe rows it uses (`recipe`) and sets the optimizer and model switches.
Precedence: flags > YAML file > preset > recipe row > built-in defaults; the resolved set is
written to the run's config.yaml. Model switches are set only on models they apply to (the
gate's on gated mixtures, `num_iterations` on second-order heads, ...); elsewhere they stay
unset, and the seed family's ImageNet models take none of them.
"""

from gmsop_keras.models.options import MODEL_OPTIONS, applicable_options

NAMES = ("default", "paper", "official")

PRESETS = {
    "default": dict(
        recipe="paper", weight_decay=5e-4, weight_decay_mode="decoupled", decay_norms_and_biases=False,
        num_iterations=5, gate_input_norm=True, gate_init="random", representation_gamma=None,
        sop_baseline_bn=True, bn_momentum=0.9,
    ),
    "paper": dict(
        recipe="paper", weight_decay=5e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
        num_iterations=5, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
        sop_baseline_bn=False, bn_momentum=0.7,
    ),
    "official": dict(
        recipe="official", weight_decay=1e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
        num_iterations=3, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
        sop_baseline_bn=False, bn_momentum=0.7,
    ),
}


def preset_values(name, backbone, head, model_keys=None, explicit=None):
    """The values preset `name` sets for this backbone and head.

    Model switches (`model_keys`, default: every option of `MODEL_OPTIONS`) are left out where
    they do not apply (judged with the `explicit` values given beside the preset, e.g.
    `sop_baseline_bn`), and entirely for the seed family's ImageNet backbones.

    Raises:
        ValueError: an unknown preset.
    """
    if name not in PRESETS:
        raise ValueError(f"`preset` must be one of {', '.join(NAMES)}. Received: preset={name!r}")
    settings = PRESETS[name]
    model_keys = [option.name for option in MODEL_OPTIONS] if model_keys is None else model_keys
    values = {k: v for k, v in settings.items() if k not in model_keys}
    resolved = {**settings, **{k: v for k, v in (explicit or {}).items() if v is not None}}
    # The same declaration `build_model` refuses options by (gmsop_keras.models.options).
    applies = applicable_options(backbone, head, resolved.get("sop_baseline_bn", True))
    values.update({k: settings[k] for k in model_keys if k in settings and k in applies})
    return values
