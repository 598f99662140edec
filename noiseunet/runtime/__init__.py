"""What every trainer of the package runs on: the accelerator, clean stops, the run log and its trackers.

Text-to-image training and segmentation both use these; neither imports the other.
"""

from .accelerator import any_process, largest, make_accelerator, stop_requests
from .run_log import RunLog, plot_loss, resolve_trackers

__all__ = ["RunLog", "any_process", "largest", "make_accelerator", "plot_loss", "resolve_trackers", "stop_requests"]
