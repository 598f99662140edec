"""Prompt-adherence evaluation on the built-in shapes data: a pixel checker and the evaluator."""

from .checker import ShapeReading, judge, read_image
from .evaluate import evaluate, format_report

__all__ = ["ShapeReading", "judge", "read_image", "evaluate", "format_report"]
