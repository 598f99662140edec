"""Scoring generated shapes images: does the image show what its prompt asked for?"""

from noiseunet.evaluation.checker import ShapeReading, judge, read_image

__all__ = ["ShapeReading", "judge", "read_image"]
