"""The ablation studies of the paper's Sec. 3.2 as data, and the search space each one tunes.

| study   | paper          | tuner     | space (defaults)                                             |
| ------- | -------------- | --------- | ------------------------------------------------------------ |
| `alpha` | Fig. 2         | grid      | alpha in {0, 1, 10, 100, 1000}; GM-GAP-16-4                   |
| `nk`    | Fig. 3         | grid      | (N, K) in {4, 8, 16, 32} x {1, 2, 4, 8, 16}, K <= N; alpha 100 |
| `free`  | (an extension) | bayesian  | (N, K) as `nk`, alpha in [1, 1000] (log), lr in [lr/4, 4 lr]  |

The head family (GM-GAP in the paper's ablations) is fixed per study; the
paper ran these ablations with a fixed learning rate, which `alpha` and `nk`
keep (the recipe's, or `--lr`).
"""

HEAD_FAMILIES = ("gm-gap", "gm-sop")
# The grids of the paper's Sec. 3.2 (Fig. 2 right, Fig. 3).
PAPER_N = (4, 8, 16, 32)
PAPER_K = (1, 2, 4, 8, 16)
PAPER_ALPHAS = (0.0, 1.0, 10.0, 100.0, 1000.0)
PAPER_ALPHA = 100.0


def nk_pairs(num_components=PAPER_N, top_k=PAPER_K):
    """The valid (N, K) pairs of two grids as `"N-K"` strings, ordered by N, then K.

    >>> nk_pairs((4, 16), (2, 8))
    ['4-2', '16-2', '16-8']

    Raises:
        ValueError: if a value is not a positive integer, or no pair has K <= N.
    """
    for name, values in (("num_components", num_components), ("top_k", top_k)):
        if not values or any(int(v) != v or v < 1 for v in values):
            raise ValueError(f"`{name}` must be positive integers. Received: {name}={list(values)}")
    pairs = [f"{n}-{k}" for n in sorted(set(num_components)) for k in sorted(set(top_k)) if k <= n]
    if not pairs:
        raise ValueError(
            f"no pair has K <= N. Received: num_components={list(num_components)}, top_k={list(top_k)}"
        )
    return pairs


def parse_nk(value):
    """`"16-8"` -> `(16, 8)`."""
    try:
        n, k = (int(part) for part in str(value).split("-"))
    except ValueError:
        raise ValueError(f"`nk` must be 'N-K', e.g. '16-8'. Received: nk={value!r}") from None
    return n, k


STUDIES = {
    "alpha": dict(tuner="grid", head_family="gm-gap", num_components=(16,), top_k=(4,), alphas=PAPER_ALPHAS),
    "nk": dict(tuner="grid", head_family="gm-gap", num_components=PAPER_N, top_k=PAPER_K, alphas=(PAPER_ALPHA,)),
    "free": dict(tuner="bayesian", head_family="gm-gap", num_components=PAPER_N, top_k=PAPER_K,
                 alpha_range=(1.0, 1000.0), lr_scale=4.0, max_trials=10),
}


def search_space(head_family, num_components, top_k, lr, *, alphas=None, alpha_range=None, lr_range=None):
    """The tuner's `HyperParameters`: every hyperparameter of `GMSOPHyperModel`, tuned or fixed.

    Args:
        head_family: `"gm-gap"` or `"gm-sop"`.
        num_components: the N grid; with `top_k`, the valid pairs form `nk`.
        top_k: the K grid.
        lr: the learning rate when `lr_range` is not given.
        alphas: alpha values as a choice (grid studies); or
        alpha_range: `(low, high)` alpha as a float (log sampling when `low > 0`).
        lr_range: `(low, high)`: lr as a log-float with default `lr` (clipped).

    Returns:
        A `keras_tuner.HyperParameters`; a single value is `Fixed`.
    """
    if (alphas is None) == (alpha_range is None):
        raise ValueError("Give exactly one of `alphas` and `alpha_range`.")
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_family", head_family)
    _choice_or_fixed(hp, "nk", nk_pairs(num_components, top_k))
    if alphas is not None:
        values = sorted({float(a) for a in alphas})
        if values[0] < 0:
            raise ValueError(f"`alphas` must be >= 0. Received: alphas={list(alphas)}")
        _choice_or_fixed(hp, "balance_loss_weight", values)
    else:
        low, high = _range("alpha_range", alpha_range, allow_zero=True)
        default = min(max(PAPER_ALPHA, low), high)
        sampling = "log" if low > 0 else "linear"
        hp.Float("balance_loss_weight", low, high, sampling=sampling, default=default)
    if lr_range is None:
        hp.Fixed("lr", float(lr))
    else:
        low, high = _range("lr_range", lr_range)
        hp.Float("lr", low, high, sampling="log", default=min(max(float(lr), low), high))
    return hp


def _choice_or_fixed(hp, name, values):
    if len(values) == 1:
        hp.Fixed(name, values[0])
    else:
        hp.Choice(name, values)  # numbers are ordered; `nk` pairs are listed by N, then K


def _range(name, value, allow_zero=False):
    low, high = (float(v) for v in value)
    if not (low < high and (low > 0 or (allow_zero and low == 0))):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be (low, high) with {bound} low < high. Received: {name}={list(value)}")
    return low, high
