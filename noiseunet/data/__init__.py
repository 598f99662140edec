"""Datasets for noiseunet."""
