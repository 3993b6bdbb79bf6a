"""Reachability checks."""
