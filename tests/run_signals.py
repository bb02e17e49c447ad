"""Signalling a running command at the moment that matters: when a file it writes appears."""

import signal
import time


def signal_when(process, path, signal_number=signal.SIGKILL, timeout=240):
    """Waits until `path` exists (e.g. a backup's marker), failing if `process` ends first or
    `timeout` seconds pass, then sends `signal_number` to `process`."""
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f"the run ended before {path.name} appeared"
        time.sleep(0.05)
    process.send_signal(signal_number)
