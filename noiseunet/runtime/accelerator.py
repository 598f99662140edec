"""The accelerator a run trains on, and the stop requests (SIGINT/SIGTERM) it honours between steps."""

import os
import signal
from contextlib import contextmanager
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..precision import resolve_precision


def make_accelerator(mixed_precision: str, **kwargs) -> Accelerator:
    """An Accelerator with this run's precision, also when an earlier run in the same process used another.

    accelerate keeps the precision in process-wide state and refuses a second, different one; clearing the
    accelerator part of that state (the process group stays) lets a notebook or a test suite train several
    times in one process.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    # Several processes (accelerate launch, torchrun) on a machine without a GPU: accelerate only picks its
    # CPU backend (gloo) when told it runs on the CPU; otherwise each process would train alone.
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=resolve_precision(mixed_precision), cpu=cpu_processes, **kwargs)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` holds on any process: out of time or asked to stop, every process stops at the same step."""
    return bool(largest(accelerator, float(flag)))


def largest(accelerator: Accelerator, value: float) -> float:
    """The largest of every process's ``value``: one number all processes agree on (clocks differ)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(torch.tensor([value], device=accelerator.device), reduction="max").item()


class StopRequest:
    """The signal number that asked the run to stop, or None."""

    requested: int | None = None


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGINT/SIGTERM finish the current step; the trainer then saves a checkpoint and its outputs and exits."""
    stop = StopRequest()
    handler = lambda signum, frame: setattr(stop, "requested", signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
