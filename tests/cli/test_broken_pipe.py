"""A command whose reader closes the pipe (`gmsop-predict ... --json | head`) ends quietly."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = """
import sys
from gmsop_keras.cli.errors import run_cli

def main(argv):
    for i in range(200000):
        print(f"line {i} " + "x" * 60)

sys.exit(run_cli(main, []))
"""


def test_a_reader_that_closes_the_pipe_ends_the_command_without_a_traceback():
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "line 0 " + "x" * 60 + "\n"
    process.stdout.close()  # what `head -1` does after its line
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
