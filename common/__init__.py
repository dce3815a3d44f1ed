"""Shared library of the five papers: backbones, data, metrics, training utilities."""
