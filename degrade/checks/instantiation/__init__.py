"""Instantiation checks."""
