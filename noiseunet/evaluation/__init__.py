"""Prompt-adherence evaluation on the built-in shapes data: the pixel checker, per task family, and the evaluator."""

from .checker import ShapeReading, judge, read_image
from .evaluate import evaluate, format_report
from .instances import Instance, read_instances

__all__ = ["Instance", "ShapeReading", "evaluate", "format_report", "judge", "read_image", "read_instances"]
