"""Jobs for :mod:`tests.test_workers`, importable by name in spawned worker processes.

Worker processes start a fresh interpreter and unpickle a job's function by
module and name, so every function here is module-level and every argument a
plain value (paths as strings).  Jobs that must be observed from the test
(how often they ran, in which process) append a line to a file the test names.
Nothing here imports Twisted or touches anything but the paths it is given.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from streamsrv.audio.decode import DecodeError, decode


class UnusualError(Exception):
    """An exception type the worker raises and the caller must see as itself."""

    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code

    def __reduce__(self) -> tuple[type[UnusualError], tuple[int]]:
        """Pickle by code."""
        return (type(self), (self.code,))


def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


def pid() -> int:
    """Return the worker's process id."""
    return os.getpid()


def fail_with(code: int) -> None:
    """Raise :class:`UnusualError` with ``code``."""
    raise UnusualError(code)


def fail_decoding() -> None:
    """Raise the decoder's client-safe error."""
    raise DecodeError("corrupt file")


def record(log_path: str, label: str, sleep_s: float = 0.0) -> int:
    """Append ``label pid`` to a file, sleep, return the pid.

    :param log_path: absolute path of the record file.
    :param label: what to write.
    :param sleep_s: how long to take.
    """
    with open(log_path, "a") as f:
        f.write(f"{label} {os.getpid()}\n")
    time.sleep(sleep_s)
    return os.getpid()


def block_until_gone(flag_path: str, pid_path: str, timeout_s: float = 10.0) -> int:
    """Write the pid to ``pid_path`` and sleep until ``flag_path`` exists.

    :param flag_path: the test creates this file to let the job finish.
    :param pid_path: where the worker's pid is written.
    :param timeout_s: finish anyway after this long.
    """
    Path(pid_path).write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(flag_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def die() -> None:
    """Kill the worker running this job."""
    os.kill(os.getpid(), signal.SIGKILL)


def decoded_frames(path: str, sample_rate: int) -> tuple[int, int]:
    """Decode a file in the worker and return ``(channels, frames)``."""
    pcm = decode(Path(path), sample_rate=sample_rate)
    return pcm.channels, pcm.frames
