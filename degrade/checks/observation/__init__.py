"""Observation checks."""
