"""Presets: one name for a consistent set of departures from (or agreements with) the sources.

`python -m gmsop_keras.fit --preset default|paper|official` selects a row of `PRESETS`:

- `default`: this library's measured choices (README, "Departures"): decoupled weight decay
  with BatchNorm and biases exempt, standardised gate input, centred random gate init, the
  classifier BatchNorm starting at sqrt(128 / D), the paper's schedules.
- `paper`: the paper's text (5 Newton-Schulz iterations, L2 weight decay 5e-4 in the
  gradient, raw gate input, one normal gamma per image, dropout 0.2 after the representation
  on every model, WRN-36-2 included, its schedules); where the text is silent (gate init,
  BatchNorm start and momentum, the SR-SOP baseline's BatchNorm), the official code's choice.
- `official`: the authors' MatConvNet code: 3 iterations, L2 1e-4 on every parameter through
  the momentum, gamma 1, constant gate init with random tie-break, no BatchNorm or dropout
  on the SR-SOP baseline, BatchNorm moving averages updated with weight 0.3, one gate-noise
  gamma per image shared by the components, its schedules (with their dropout: 0.4 on
  WRN-36-2 GM-SOP).
  Where these come from (github.com/ZilinGao/GM-SOP): `examples/cnn_train_GM_dag.m` updates a
  `'gradient'` parameter with `weightDecay * value` added to the gradient before the momentum,
  and a `'average'` one (BatchNorm moments) as `(1 - lr) * value + lr * batch moments`; the
  `examples/GM/cnn_init_*.m` scripts set the moments' `learningRate = 0.3` (so Keras momentum
  0.7), `weightDecay = 0.0001` and no per-parameter weight-decay exemption (MatConvNet's
  default factor 1, BatchNorm scales and offsets included), and `iterNum` 3.

`SOURCES` gives the source of every value; docs/presets.md lists them with each preset's
departures from its source.

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
        sop_baseline_bn=True, bn_momentum=0.9, noise="per_sample",
    ),
    "paper": dict(
        recipe="paper", weight_decay=5e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
        num_iterations=5, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
        sop_baseline_bn=False, bn_momentum=0.7, noise="per_sample", dropout=0.2,
    ),
    "official": dict(
        recipe="official", weight_decay=1e-4, weight_decay_mode="coupled", decay_norms_and_biases=True,
        num_iterations=3, gate_input_norm=False, gate_init="constant", representation_gamma=1.0,
        sop_baseline_bn=False, bn_momentum=0.7, noise="per_sample",
    ),
}

# Where each value comes from, one entry per value of `PRESETS` (tests/models/test_provenance.py
# checks that none is missing and that each has one of three forms, and docs/presets.md lists
# them): `paper Sec. x.y: "<the paper's words>"`, `official <file>:<line> @ <commit> "<the
# line's code>"` (github.com/ZilinGao/GM-SOP) or `library choice (measured: <where>)`, or
# `(unmeasured: <where it is argued>)` for a choice no measurement here supports.
OFFICIAL = "5922792"  # the official repository's newest commit (2019-08-05), the one read
_GM = f"examples/GM/cnn_init_resnet_GM.m:{{}} @ {OFFICIAL}"
_DEPARTURES = 'README.md "Departures from the paper and the official code"'
_SOURCES_OF = dict(
    paper_recipe='paper Sec. 3.2: "The initial learning rates are set to 0.15 and 0.1 with decay rate of 0.1"',
    paper_wd='paper Sec. 3.1: "The parameter of weight decay is set to 5e-4"',
    paper_iterations='paper Sec. 3.1: "we compute approximate matrix square root in Eq. (9) within five iterations"',
    paper_noise='paper Sec. 2.1: "is a random variable sampled from a normal distribution"',
    official_recipe=f'official examples/GM/cnn_imagenet64.m:138 @ {OFFICIAL} "net.meta.trainOpts, ..."',
    coupled=f'official examples/cnn_train_GM_dag.m:323 @ {OFFICIAL} "parDer = vl_taccum(1/batchSize, parDer, ..."',
    decay_all=f'official examples/cnn_train_GM_dag.m:319 @ {OFFICIAL} '
              '"thisDecay = params.weightDecay * net.params(p).weightDecay ;"',
    raw_gate_input=f'official {_GM.format(201)} "lastAdded.var,\'H_x\',Hx_par );"',
    constant_gate=f'official matlab/+dagnn/H_x.m:107 @ {OFFICIAL} '
                  '"params{1} = ones(obj.size,\'single\') / obj.size(1);%balance initial"',
    gamma_one=f'official matlab/+dagnn/BatchNorm.m:46 @ {OFFICIAL} "params{{1}} = ones(obj.numChannels,1,\'single\') ;"',
    no_baseline_bn=f'official examples/GM/cnn_init_resnet_baseline.m:168 @ {OFFICIAL} "net.addLayer(\'prediction\' , ..."',
    moments_rate=f'official {_GM.format(399)} "net.params(k).learningRate = 0.3 ;"',
    noise_per_image=f'official matlab/+dagnn/H_x.m:31 @ {OFFICIAL} '
                    '"gamma_ = random(\'Normal\',0,1,1,bs);%normal distribution for each img"',
)
SOURCES = {
    "default": dict(
        recipe=_SOURCES_OF["paper_recipe"],
        weight_decay=_SOURCES_OF["paper_wd"],
        weight_decay_mode=f"library choice (unmeasured: {_DEPARTURES}, weight_decay_mode)",
        decay_norms_and_biases=f"library choice (unmeasured: {_DEPARTURES}, decay_norms_and_biases)",
        num_iterations=_SOURCES_OF["paper_iterations"],
        gate_input_norm=f"library choice (measured: {_DEPARTURES}, gate_input_norm: load CV 0.08-0.13 "
                        "against 0.67-0.79 raw)",
        gate_init=f"library choice (measured: {_DEPARTURES}, gate_input_norm: centred random kernels on the "
                  "standardised input leave no component unused)",
        representation_gamma='library choice (measured: benchmarks/BENCHMARKS.md "Presets: the paper\'s settings '
                             'against this library\'s defaults"; gmsop_keras/models/heads.py)',
        sop_baseline_bn=f"library choice (unmeasured: {_DEPARTURES}, sop_baseline_bn)",
        bn_momentum=f"library choice (unmeasured: {_DEPARTURES}, bn_momentum)",
        noise=_SOURCES_OF["paper_noise"],
    ),
    "paper": dict(
        recipe=_SOURCES_OF["paper_recipe"],
        weight_decay=_SOURCES_OF["paper_wd"],
        # The text's "weight decay" under MatConvNet, whose SGD adds it to the gradient.
        weight_decay_mode='paper Sec. 3.1: "The program is implemented using MatConvNet toolkit"',
        # Where the text is silent: the official code's choice.
        decay_norms_and_biases=_SOURCES_OF["decay_all"],
        num_iterations=_SOURCES_OF["paper_iterations"],
        gate_input_norm='paper Sec. 2.1: "weights are outputted by using a fully-connected layer with additional '
                        'noise perturbations"',
        gate_init=_SOURCES_OF["constant_gate"],
        representation_gamma=_SOURCES_OF["gamma_one"],
        sop_baseline_bn=_SOURCES_OF["no_baseline_bn"],
        bn_momentum=_SOURCES_OF["moments_rate"],
        noise=_SOURCES_OF["paper_noise"],
        dropout='paper Sec. 2.3: "a dropout [35] layer with drop rate of 0.2 after final representation"',
    ),
    "official": dict(
        recipe=_SOURCES_OF["official_recipe"],
        weight_decay=f'official {_GM.format(373)} "net.meta.trainOpts.weightDecay = 0.0001 ;"',
        weight_decay_mode=_SOURCES_OF["coupled"],
        decay_norms_and_biases=_SOURCES_OF["decay_all"],
        num_iterations=f"official {_GM.format(255)} \"net.addLayer(name , dagnn.OBJ_ConvNet_Cov_Sqrtm( 'coef', 1, "
                       "'iterNum', 3),  ...\"",
        gate_input_norm=_SOURCES_OF["raw_gate_input"],
        gate_init=_SOURCES_OF["constant_gate"],
        representation_gamma=_SOURCES_OF["gamma_one"],
        sop_baseline_bn=_SOURCES_OF["no_baseline_bn"],
        bn_momentum=_SOURCES_OF["moments_rate"],
        noise=_SOURCES_OF["noise_per_image"],
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
