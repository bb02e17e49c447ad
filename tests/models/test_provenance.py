"""Every value of every preset and recipe row names its source, in one of three forms; where the
sources themselves are at hand (the official repository's git directory, the paper's text), each
citation is checked against them: the cited line holds the quoted code, the paper the quoted words."""

import glob
import os
import re
import subprocess

import pytest

from gmsop_keras.models.presets import PRESETS, SOURCES
from gmsop_keras.training.recipes import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER = re.compile(r'^paper Sec\. [1-5](\.[1-9])?: "(?P<words>[^"]+)"$')
OFFICIAL = re.compile(r'^official (?P<path>(examples|matlab)/[\w+/.-]+\.m):(?P<line>[1-9]\d*) '
                      r'@ (?P<commit>[0-9a-f]{7,40}) "(?P<code>.+)"$')
LIBRARY = re.compile(r"^library choice \((measured|unmeasured): .+\)$")
# The sources, where this checkout's machine has them (otherwise those checks skip, saying so).
OFFICIAL_REPO = os.environ.get("GMSOP_OFFICIAL_REPO", "/work/.mirror/ZilinGao+GM-SOP/repo")
# The paper's text lies in the shared folder beside a checkout (../shared/seeds/002_*.txt).
PAPER_TEXT = os.environ.get("GMSOP_PAPER_TEXT") or next(
    iter(sorted(glob.glob(os.path.join(ROOT, os.pardir, "shared", "seeds", "002_*.txt")))), "")


def _preset_citations():
    return [(f"{name}.{key}", SOURCES[name].get(key)) for name, values in PRESETS.items() for key in values]


def _recipe_citations():
    cited = []
    for dataset, backbone, head, recipe in RECIPES:
        for field, value in recipe.settings().items():
            if value is not None:
                source = dict(recipe.cites).get(field)
                cited.append((f"{dataset}/{backbone}/{head}/{recipe.source}.{field}", source))
    return cited


CITATIONS = _preset_citations() + _recipe_citations()


def _form(source):
    return next((name for name, form in (("paper", PAPER), ("official", OFFICIAL), ("library", LIBRARY))
                 if isinstance(source, str) and form.match(source)), None)


def test_every_value_has_a_source_of_one_of_the_three_forms():
    assert [(where, source) for where, source in CITATIONS if _form(source) is None] == []


def test_no_source_without_a_value():
    assert {name: sorted(set(SOURCES[name]) - set(PRESETS[name])) for name in PRESETS} == {n: [] for n in PRESETS}
    assert set(SOURCES) == set(PRESETS)
    for row in RECIPES:
        recipe = row[3]
        set_fields = {f for f, v in recipe.settings().items() if v is not None}
        assert set(dict(recipe.cites)) == set_fields, row[:3]


def test_the_form_check_refuses_what_is_not_a_source():
    for bad in (None, "", "paper", 'paper Sec. 3.1 "no colon"', "official cnn_init_resnet_GM.m:12 @ 5922792 \"x\"",
                'official examples/GM/a.m:12 @ main "x"', 'official examples/GM/a.m:12 @ 59227 "x"',
                "library choice", "library choice (guess: none)"):
        assert _form(bad) is None, bad
    assert _form('official examples/GM/cnn_init_WRN_GM.m:380 @ 5922792 "net.meta.trainOpts.batchSize = 150;"')
    assert _form('paper Sec. 2.3: "with drop rate of 0.2 after final representation"') == "paper"
    assert _form("library choice (measured: benchmarks/BENCHMARKS.md)") == "library"


def _normal(text):
    return " ".join(text.replace("$", " ").replace("\\", "").split())


OFFICIAL_CITED = sorted({s for _, s in CITATIONS if _form(s) == "official"})
PAPER_CITED = sorted({s for _, s in CITATIONS if _form(s) == "paper"})


@pytest.mark.skipif(not os.path.isdir(OFFICIAL_REPO), reason=f"no official repository at {OFFICIAL_REPO} "
                    "(set GMSOP_OFFICIAL_REPO to a git directory of github.com/ZilinGao/GM-SOP)")
def test_every_official_citation_quotes_its_line():
    wrong = []
    for source in OFFICIAL_CITED:
        match = OFFICIAL.match(source)
        text = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"{match['commit']}:{match['path']}"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        line = text[int(match["line"]) - 1]
        if match["code"] not in line:
            wrong.append((source, line))
    assert wrong == []


@pytest.mark.skipif(not os.path.isfile(PAPER_TEXT), reason=f"no paper text at {PAPER_TEXT} "
                    "(set GMSOP_PAPER_TEXT to the paper's text)")
def test_every_paper_citation_quotes_the_paper():
    paper = _normal(open(PAPER_TEXT, encoding="utf-8").read())
    assert [s for s in PAPER_CITED if _normal(PAPER.match(s)["words"]) not in paper] == []


def test_docs_list_every_source():
    with open(os.path.join(ROOT, "docs", "presets.md"), encoding="utf-8") as f:
        docs = f.read()
    missing = [(where, source) for where, source in CITATIONS if f"`{source}`" not in docs]
    assert missing == []
