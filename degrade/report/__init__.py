"""Renderers: console (rich), markdown, self-contained HTML. JSON lives on Diagnosis itself."""
