"""The recipe table (paper text and official code rows), stage scaling and the folder row."""

import numpy as np
import pytest

from gmsop_keras.training.recipes import FOLDER, RECIPES, SYNTHETIC, find_recipe, head_kind, scale_stages, step_schedule

# One case per row of the table: (dataset, backbone, head, source) -> (stages, lr, batch, wd, dropout),
# with the sentence of the paper, or the line of the official script, it comes from.
PAPER = "paper"
OFFICIAL = "official"
ROWS = [
    # Sec. 3.4: "ResNet-18-8256d and remaining ones are trained within {35, 10, 10, 5} and
    # {25, 5, 5, 5} epochs, and the initial learning rates are set to 0.05 and 0.1".
    (("places365", "resnet18", "gap-8256", PAPER), ((35, 10, 10, 5), 0.05, 256, 5e-4, None)),
    (("places365", "resnet18", "gm-sop-16-8", PAPER), ((25, 5, 5, 5), 0.1, 256, 5e-4, None)),
    # Sec. 3.2: "We train SR-SOP (or parametric SR-SOP) and Ave-SOP-16 (or GM-SOP-16-8) within
    # {20,5,5,5,5} and {40,10,5,5} epochs. The initial learning rates are set to 0.15 and 0.1";
    # GM-GAP and the baselines "{50, 15, 10} epochs, ... the initial learning rate is set to 0.075";
    # "batchsize of 256 and momentum of 0.9. The parameter of weight decay is set to 5e-4".
    (("imagenet64", "resnet18", "psr-sop", PAPER), ((20, 5, 5, 5, 5), 0.15, 256, 5e-4, None)),
    (("imagenet64", "resnet18", "ave-sop-16", PAPER), ((40, 10, 5, 5), 0.1, 256, 5e-4, None)),
    (("imagenet64", "resnet18", "gm-gap-16-8", PAPER), ((50, 15, 10), 0.075, 256, 5e-4, None)),
    # Sec. 3.3: "All ResNet-50 based methods are trained within {50, 15, 10} epochs, and initial
    # learning rates ... are set to 0.1 and 0.075 for our GM-SOP and remaining ones".
    (("imagenet64", "resnet50", "gm-sop-16-8", PAPER), ((50, 15, 10), 0.1, 256, 5e-4, None)),
    (("imagenet64", "resnet50", "gap-8256", PAPER), ((50, 15, 10), 0.075, 256, 5e-4, None)),
    # cnn_init_resnet_baseline.m: "ResNet18-GAP  lr = 0.75*[0.1 * ones(1,50), 0.01*ones(1,15),
    # 0.001*ones(1,10)]", "ResNet18-SR-SOP  lr = 1.5 * [0.1 * ones(1,40), ... (1,10), (1,5), (1,5)]",
    # "batchSize = 128 * 2", "weightDecay = 0.0001".
    (("imagenet64", "resnet18", "gap", OFFICIAL), ((50, 15, 10), 0.075, 256, 1e-4, None)),
    (("imagenet64", "resnet18", "sr-sop", OFFICIAL), ((40, 10, 5, 5), 0.15, 256, 1e-4, None)),
    # cnn_init_resnet_GM.m: ResNet18-GM-GAP 0.75 x {50, 15, 10}, ResNet18-GM-SOP 1 x {40, 10, 5, 5};
    # "drop_rate = 0.2".
    (("imagenet64", "resnet18", "gm-gap-16-8", OFFICIAL), ((50, 15, 10), 0.075, 256, 1e-4, 0.2)),
    (("imagenet64", "resnet18", "gm-sop-16-8", OFFICIAL), ((40, 10, 5, 5), 0.1, 256, 1e-4, 0.2)),
    # The official code has no reachable ResNet-50 GM-SOP (its schedule lines, 5533a61 to c2f2a1d,
    # sat behind a model-type check that refused it): the paper's Sec. 3.3 row.
    (("imagenet64", "resnet50", "gm-sop-16-8", OFFICIAL), ((50, 15, 10), 0.1, 256, 5e-4, None)),
    # cnn_init_WRN_baseline.m: WRN-36-2-GAP 1 x {20, 10, 10}, WRN-36-2-SR-SOP 1 x {10, 10, 10},
    # "batchSize = 150"; "opts.dropout = false" (line 8): no dropout on either.
    (("imagenet64", "wrn-36-2", "gap", OFFICIAL), ((20, 10, 10), 0.1, 150, 1e-4, None)),
    (("imagenet64", "wrn-36-2", "sr-sop", OFFICIAL), ((10, 10, 10), 0.1, 150, 1e-4, None)),
    # cnn_init_WRN_GM.m: "WRN-36-2-GM-GAP  lr = 1 *[0.1 * ones(1,20), 0.01*ones(1,10),
    # 0.001*ones(1,10)]", "WRN-36-2-GM-SOP  lr = 0.9 * [... (1,20), (1,10), (1,5), (1,5)]",
    # "batchSize = 150", drop rate 0.2 (first order) and 0.4.
    (("imagenet64", "wrn-36-2", "gm-gap-16-8", OFFICIAL), ((20, 10, 10), 0.1, 150, 1e-4, 0.2)),
    (("imagenet64", "wrn-36-2", "gm-sop-16-8", OFFICIAL), ((20, 10, 5, 5), 0.09, 150, 1e-4, 0.4)),
    # The project's rows: the synthetic set (benchmarks/BENCHMARKS.md) and a converted folder.
    (("synthetic", "resnet18", "gm-sop-16-8", OFFICIAL), ((4, 2), 0.05, 64, 5e-4, None)),
    (("folder", "resnet18", "gap", PAPER), ((20, 5, 5), 0.05, 128, 5e-4, None)),
]


@pytest.mark.parametrize("key, expected", ROWS, ids=["-".join(key) for key, _ in ROWS])
def test_recipe_rows(key, expected):
    recipe = find_recipe(*key)
    stages, lr, batch_size, weight_decay, dropout = expected
    assert recipe.stages == stages and recipe.lr == lr and recipe.batch_size == batch_size
    assert recipe.weight_decay == weight_decay and recipe.dropout == dropout
    assert recipe.momentum == 0.9 and recipe.lr_decay == 0.1


def test_every_row_is_tested():
    reached = {id(find_recipe(*key)) for key, _ in ROWS}
    assert [row[:3] + (row[3].source,) for row in RECIPES if id(row[3]) not in reached] == []


def test_official_lookup_falls_back_to_the_paper_where_the_code_has_no_row():
    assert find_recipe("places365", "resnet18", "gm-sop-16-8", "official") is find_recipe(
        "places365", "resnet18", "gm-sop-16-8", "paper")
    assert find_recipe("imagenet64", "resnet50", "gap", "official").source == "paper"


def test_folders_and_unknown_dataset_kinds_get_the_folder_row():
    assert find_recipe("folder", "resnet18", "gm-sop-16-8") is FOLDER
    assert find_recipe("cifar", "resnet18", "gm-sop-16-8") is FOLDER
    assert find_recipe("synthetic", "wrn-36-2", "gap") is SYNTHETIC


@pytest.mark.parametrize("head, kind", [("gap", "gap"), ("gap-512", "gap"), ("ave-gap-16", "gap"),
                                        ("gm-gap-16-8", "gm-gap"), ("sr-sop", "sop"), ("psr-sop", "sop"),
                                        ("ave-sop-16", "gm-sop"), ("gm-sop-32-4", "gm-sop")])
def test_head_kinds(head, kind):
    assert head_kind(head) == kind


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="`source` must be one of paper, official"):
        find_recipe("imagenet64", "resnet18", "gap", "mine")


@pytest.mark.parametrize(
    "stages, epochs, expected",
    [
        ((40, 10, 5, 5), 6, [3, 1, 1, 1]),
        ((40, 10, 5, 5), 12, [8, 2, 1, 1]),
        ((40, 10, 5, 5), 60, [40, 10, 5, 5]),
        ((40, 10, 5, 5), 120, [80, 20, 10, 10]),
        ((50, 15, 10), 15, [10, 3, 2]),
        ((50, 15, 10), 10, [7, 2, 1]),  # shares 6.67, 2, 1.33: the missing epoch to the largest remainder
        ((20, 5, 5, 5, 5), 5, [1, 1, 1, 1, 1]),
        ((20, 5, 5, 5, 5), 3, [1, 1, 1]),  # fewer epochs than stages: the first ones, one each
        ((4, 2), 2, [1, 1]),
        ((4, 2), 1, [1]),
    ],
)
def test_scale_stages(stages, epochs, expected):
    scaled = scale_stages(stages, epochs)
    assert scaled == expected and sum(scaled) == epochs


def test_scale_stages_keeps_every_stage_and_the_sum_for_many_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        stages = list(rng.integers(1, 60, size=rng.integers(1, 6)))
        epochs = int(rng.integers(len(stages), 200))
        scaled = scale_stages(stages, epochs)
        assert sum(scaled) == epochs and min(scaled) >= 1 and len(scaled) == len(stages)
        shares = np.array(stages) * epochs / sum(stages)
        assert np.all(np.abs(np.array(scaled) - shares) < 1 + 1e-9) or min(stages) * epochs < sum(stages)


def test_step_schedule_decays_tenfold_at_each_stage_boundary():
    schedule = step_schedule(0.1, (2, 1, 1), steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 19, 20, 29, 30, 100)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
