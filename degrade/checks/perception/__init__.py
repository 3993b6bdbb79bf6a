"""Perception checks."""
