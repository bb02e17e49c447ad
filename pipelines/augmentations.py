"""Names of the training augmentations, and the epoch length they imply, without TensorFlow.

The commands check `--augment` and count an epoch's steps before TensorFlow loads;
`pipelines.augment` implements what the names mean.
"""

AUGMENTATIONS = ("none", "flip", "crop_flip", "pad_crop_flip", "chrabaszcz")
# The augmentations whose training epoch holds every image twice, as itself and as its mirror image.
DOUBLING_AUGMENTATIONS = ("chrabaszcz",)
# `python -m gmsop_keras.evaluate --test-time-augment`: none, or pad 4 + random crop (Chrabaszcz et al.).
TEST_TIME_AUGMENTATIONS = ("none", "pad-crop")


def epoch_examples(num_examples, augment):
    """Examples in one training epoch of a split of `num_examples` records: twice as many under a
    doubling augmentation ("chrabaszcz": each image and its mirror image once), else `num_examples`."""
    return 2 * num_examples if augment in DOUBLING_AUGMENTATIONS else num_examples
