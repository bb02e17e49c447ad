"""docs/reliability.md: every row of its fault tables names at least one test, and every test it
names exists (a file under tests/ holding a test function of that name)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`|`::(\w+)`")


def _rows():
    with open(os.path.join(ROOT, "docs", "reliability.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [line for line in lines if line.startswith("| ") and not line.startswith("| ---")
            and not line.startswith("| fault ")]


def test_every_fault_row_names_a_test_that_exists():
    rows = _rows()
    assert len(rows) >= 50
    missing, untested = [], []
    for row in rows:
        nodes, path = [], None
        for match in NODE.finditer(row):
            path = match.group(1) or path  # `::name` continues the file named before it in the row
            nodes.append((path, match.group(2) or match.group(3)))
        if not nodes:
            untested.append(row[:80])
        for path, name in nodes:
            text = open(os.path.join(ROOT, path), encoding="utf-8").read() if path else ""
            if not re.search(rf"^def {name}\(", text, re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert untested == [] and missing == []
