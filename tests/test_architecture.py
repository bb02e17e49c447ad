"""The package's shape, checked from its source (docs/ARCHITECTURE.md): a reviewer can also run

    python tests/test_architecture.py

to print the report: the commands, every module's length, the import graph's layers and any
violation. The rules:

1. Every top-level module of `gmsop_keras/` (besides `__init__.py`) is a command (it has a
   `__main__` block); the library lives in subpackages.
2. No module of `gmsop_keras/`, `pipelines/` or `tuning/` is over 300 lines.
3. No import circle between modules, imports inside functions included.
4. Imports run one way: ops <- layers <- models <- training <- serving, weights <- cli <- commands;
   `pipelines` below all of `gmsop_keras` (it imports none of it); `tuning` above the commands'
   library (training, cli).
5. An import inside a function is the exception: it defers TensorFlow (or an optional package)
   past a command's argument checks. A project module imported inside a function is allowed only
   in a command, in `cli/`, or in the few library places listed in `DEFERRED` (each says why), and
   the line carries a comment.
"""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("gmsop_keras", "pipelines", "tuning")
MAX_LINES = 300
# Layer of each part of gmsop_keras: a module may import only from its own layer or lower ones.
LAYERS = {"ops": 0, "layers": 1, "models": 2, "training": 3, "serving": 4, "weights": 4, "cli": 5}
COMMAND_LAYER = 6
# Library modules that import a project module inside a function, and why (the only ones).
DEFERRED = {
    ("pipelines.synthetic", "pipelines.writer"): "the writer imports TensorFlow; `import pipelines` must not",
    ("pipelines.imagenet64", "pipelines.tfds_source"): "tensorflow_datasets, slow to import, only for that source",
    ("pipelines.places365", "pipelines.tfds_source"): "tensorflow_datasets, slow to import, only for that source",
}


def modules():
    """{dotted name: path} of every module of the three packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def imports(path, known):
    """[(imported project module, line number, inside a function, the line has a comment)] of a file."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    tree = ast.parse(source)
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for function in functions for n in ast.walk(function) if n is not function}
    this = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = this.split(".")[: -node.level] if not path.endswith("__init__.py") else this.split(".")
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        line = lines[node.lineno - 1]
        for target in dict.fromkeys(targets):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != this:
                found.append((target, node.lineno, id(node) in inner, "#" in line))
    return found


def layer(module, path):
    parts = module.split(".")
    if parts[0] == "pipelines":
        return -1
    if parts[0] == "tuning":
        return COMMAND_LAYER
    if len(parts) == 1:
        return None  # gmsop_keras/__init__.py: the package's face, above everything it re-exports
    if len(parts) == 2 and not os.path.basename(path) == "__init__.py":
        return COMMAND_LAYER
    return LAYERS[parts[1]]


def is_command(path):
    with open(path, encoding="utf-8") as f:
        return 'if __name__ == "__main__":' in f.read()


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def violations():
    known = modules()
    problems, graph = [], {}
    for module, path in sorted(known.items()):
        with open(path, encoding="utf-8") as f:
            length = sum(1 for _ in f)
        if length > MAX_LINES:
            problems.append(f"{module}: {length} lines (at most {MAX_LINES}): split it by concern")
        parts = module.split(".")
        if parts[0] == "gmsop_keras" and len(parts) == 2 and not path.endswith("__init__.py") and not is_command(path):
            problems.append(f"{module}: library code at the package's top level, where only commands live")
        here = layer(module, path)
        command = is_command(path) and (parts[0] != "gmsop_keras" or len(parts) == 2)
        for target, line, deferred, commented in imports(path, known):
            graph.setdefault(module, set()).add(target)
            there = layer(target, known[target])
            if here is not None and there is not None and there > here:
                problems.append(f"{module}:{line} imports {target}, a layer above it")
            if here == -1 and not target.startswith("pipelines"):
                problems.append(f"{module}:{line} imports {target}: pipelines imports nothing of gmsop_keras")
            if deferred:
                allowed = command or parts[:2] == ["gmsop_keras", "cli"] or (module, target) in DEFERRED
                if not allowed:
                    problems.append(f"{module}:{line} imports {target} inside a function: import it at the top")
                elif not commented:
                    problems.append(f"{module}:{line} defers importing {target} without a comment saying why")
    for component in cycles(graph):
        problems.append("import circle: " + " <-> ".join(component))
    return problems, known


def test_the_package_keeps_its_layered_shape():
    problems, _ = violations()
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_circle_and_an_upward_import():
    # The checker itself: a circle and its members are found.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known = modules()
    assert layer("gmsop_keras.layers.gated_mixture", known["gmsop_keras.layers.gated_mixture"]) == 1
    assert layer("gmsop_keras.fit", known["gmsop_keras.fit"]) == COMMAND_LAYER
    assert any(target == "gmsop_keras.ops" for target, *_ in imports(known["gmsop_keras.layers.gated_mixture"], known))


if __name__ == "__main__":
    problems, known = violations()
    print("commands:", ", ".join(m for m, p in sorted(known.items())
                                 if m.count(".") == 1 and m.startswith("gmsop_keras.") and is_command(p)))
    for module, path in sorted(known.items()):
        with open(path, encoding="utf-8") as f:
            print(f"{sum(1 for _ in f):5d}  {module}")
    print("\n".join(problems) or "no violations")
    sys.exit(1 if problems else 0)
