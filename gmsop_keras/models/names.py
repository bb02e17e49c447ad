"""Names of backbones and heads, parsed without Keras.

The commands check `--backbone` and `--head` against these before TensorFlow loads, so a typo
answers in about a second; `gmsop_keras.models` builds what the names mean. A test keeps the
backbone names equal to the builders' tables.
"""

import dataclasses
import re

# `gmsop_keras.models.backbones.BACKBONES`: the paper's small-image networks (Table 1).
SMALL_IMAGE_BACKBONES = ("resnet18", "resnet50", "wrn-36-2")
# `gmsop_keras.models.imagenet_resnets.IMAGENET_MODELS`: the seed family's ImageNet ResNet-50s.
IMAGENET_BACKBONES = ("resnet50-imagenet", "gsop1-resnet50", "gsop2-resnet50", "gauss-resnet50", "resnet50-3g")
# The head each seed-family ImageNet model was released with (`build_model(head=None)`).
IMAGENET_OWN_HEADS = {"resnet50-imagenet": "gap", "gsop1-resnet50": "gap", "gsop2-resnet50": "isqrt-256",
                      "gauss-resnet50": "gap", "resnet50-3g": "3g-256"}
# The head the paper's small-image backbones get with `head=None`: GM-SOP.
SMALL_IMAGE_DEFAULT_HEAD = "gm-sop-16-8"


def own_head(backbone):
    """The head `build_model(backbone, head=None)` uses: the seed family's own, else GM-SOP-16-8."""
    return IMAGENET_OWN_HEADS.get(backbone, SMALL_IMAGE_DEFAULT_HEAD)

# `gmsop_keras.layers.GatedMixture(dispatch=...)`: how the top-K components are computed.
DISPATCHES = ("auto", "dense", "gather", "grouped")

CANONICAL_HEADS = (
    "gap",
    "gap-512",
    "gap-8256",
    "ave-gap-16",
    "gm-gap-16-8",
    "sr-sop",
    "psr-sop",
    "ave-sop-16",
    "gm-sop-16-8",
    "isqrt-256",
    "3g-256",
    "netvlad-64",
    "sg-moe-16-8",
)
SEED_FAMILY_HEADS = ("isqrt-256", "3g-256")
HEAD_PATTERNS = ("gap-D", "ave-gap-N", "gm-gap-N-K", "ave-sop-N", "gm-sop-N-K", "netvlad-N", "sg-moe-N-K")
_HEAD_REGEX = re.compile(
    r"^(?:"
    r"(?P<gap>gap)(?:-(?P<units>\d+))?"
    r"|(?P<psr>p?)sr-sop"
    r"|(?P<mixture>ave|gm|sg)-(?P<pooling>gap|sop|moe)-(?P<n>\d+)(?:-(?P<k>\d+))?"
    r"|netvlad-(?P<clusters>\d+)"
    r")$"
)


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """What a head name means.

    Attributes:
        name: the name it was parsed from.
        pooling: `"gap"` (first order), `"sop"` (second order), `"netvlad"`
            (NetVLAD, `netvlad-N`) or `"moe"` (experts on the pooled
            feature, `sg-moe-N-K`).
        parametric: whether the representation has its own 1x1 convolutions
            (`gap-D`, `psr-sop`, and every mixture component).
        units: `D` of `gap-D`, else `None`.
        num_components: `N` of a mixture, else `None`.
        top_k: `K` of a gated mixture; `None` for an average or no mixture.
        clusters: `N` of `netvlad-N` (the dictionary size), else `None`.
    """

    name: str
    pooling: str
    parametric: bool = False
    units: int | None = None
    num_components: int | None = None
    top_k: int | None = None
    clusters: int | None = None

    @property
    def second_order(self):
        return self.pooling == "sop"

    @property
    def is_mixture(self):
        return self.num_components is not None


def list_heads():
    """The canonical head names (the rows of the paper's Tables 2-4).

    `parse_head` also accepts any `gap-D`, `ave-gap-N`, `gm-gap-N-K`,
    `ave-sop-N`, `gm-sop-N-K`, `netvlad-N` and `sg-moe-N-K`.
    """
    return list(CANONICAL_HEADS)


def parse_head(name):
    """Parses a head name into a `HeadSpec`.

    >>> parse_head("gm-sop-32-4")
    HeadSpec(name='gm-sop-32-4', pooling='sop', parametric=True, units=None, num_components=32, top_k=4)

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or
            impossible numbers (`K > N`, `N = 0`, `D = 0`, `gm-` without K).
    """
    if name in SEED_FAMILY_HEADS:
        return HeadSpec(name, "sop")
    match = _HEAD_REGEX.match(name) if isinstance(name, str) else None
    if match is not None and match["mixture"] and (match["mixture"] == "sg") != (match["pooling"] == "moe"):
        match = None  # sg- names only sg-moe-N-K; gm- and ave- mix poolings
    if match is None:
        raise ValueError(
            f"Unknown head: {name!r}. Valid heads: {', '.join(CANONICAL_HEADS)}; "
            f"or any of the patterns {', '.join(HEAD_PATTERNS)} (D, N, K positive integers, K <= N)."
        )
    if match["gap"]:
        if match["units"] is None:
            return HeadSpec(name, "gap")
        units = _positive(match["units"], "D", name)
        return HeadSpec(name, "gap", parametric=True, units=units)
    if match["clusters"] is not None:
        return HeadSpec(name, "netvlad", clusters=_positive(match["clusters"], "N", name))
    if match["mixture"] is None:
        return HeadSpec(name, "sop", parametric=bool(match["psr"]))
    num_components = _positive(match["n"], "N", name)
    top_k = None
    if match["mixture"] in ("gm", "sg"):
        if match["k"] is None:
            raise ValueError(f"Head {name!r}: a gated mixture is named {match['mixture']}-{match['pooling']}-N-K.")
        top_k = _positive(match["k"], "K", name)
        if top_k > num_components:
            raise ValueError(
                f"Head {name!r}: K must be <= N (top_k <= num_components). "
                f"Received: N={num_components}, K={top_k}"
            )
    elif match["k"] is not None:
        raise ValueError(f"Head {name!r}: an average has no K; it is named ave-{match['pooling']}-N.")
    return HeadSpec(
        name, match["pooling"], parametric=True, num_components=num_components, top_k=top_k
    )



def check_backbone(name):
    """Raises ValueError naming the valid backbones when `name` is none of them."""
    valid = SMALL_IMAGE_BACKBONES + IMAGENET_BACKBONES
    if name not in valid:
        raise ValueError(f"Unknown backbone: {name!r}. Valid backbones: {', '.join(valid)}.")
    return name


def _positive(text, symbol, name):
    value = int(text)
    if value < 1:
        raise ValueError(f"Head {name!r}: {symbol} must be a positive integer. Received: {symbol}={value}")
    return value
