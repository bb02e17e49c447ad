"""Two source trees side by side (e.g. before and after a refactoring): start-up and training step.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_layout.py /tmp/before . [--rounds 5]

For each tree, as separate processes with that tree first on PYTHONPATH, interleaved over rounds
(medians):
- `python -m gmsop_keras.fit --head vlad`: a typo, answered before TensorFlow loads;
- `python -c "import gmsop_keras"`: a user's import (registers the layers; loads Keras);
- one GM-SOP-16-8 training step (`train_on_batch`, ResNet-18, 32x32, batch 32, after 3 warm-up
  steps, median of 10) for each dispatch, `gather` and `grouped`.
Prints a Markdown table with each tree's medians and the ratio of the second tree to the first.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

STEP = """
import sys, time
import numpy as np
import keras
import gmsop_keras
dispatch = sys.argv[1]
model = gmsop_keras.build_model("resnet18", "gm-sop-16-8", num_classes=100, input_shape=(32, 32, 3),
                                dispatch=dispatch)
model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
y = rng.integers(0, 100, 32)
for _ in range(3):
    model.train_on_batch(x, y)
times = []
for _ in range(10):
    start = time.perf_counter()
    model.train_on_batch(x, y)
    times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2])
"""


def timed(tree, args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=os.path.abspath(tree), env=env, capture_output=True,
                            text=True, timeout=900)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, help="two checkouts of the project: first, second")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "`fit --head vlad` (a typo), s": lambda tree: timed(tree, ["-m", "gmsop_keras.fit", "--head", "vlad"])[0],
        "`import gmsop_keras`, s": lambda tree: timed(tree, ["-c", "import gmsop_keras"])[0],
    }
    for dispatch in ("gather", "grouped"):
        def step(tree, dispatch=dispatch):
            _, result = timed(tree, ["-c", STEP, dispatch])
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            return float(result.stdout.split()[-1])
        cases[f"GM-SOP-16-8 step, `{dispatch}`, s"] = step
    results = {(case, tree): [] for case in cases for tree in args.trees}
    for round_ in range(args.rounds):
        for case, measure in cases.items():
            for tree in (args.trees if round_ % 2 == 0 else args.trees[::-1]):
                results[case, tree].append(measure(tree))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    first, second = args.trees
    print(f"| measure | {first} | {second} | second / first |\n| --- | ---: | ---: | ---: |")
    for case in cases:
        a, b = (statistics.median(results[case, tree]) for tree in args.trees)
        print(f"| {case} | {a:.3f} | {b:.3f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
