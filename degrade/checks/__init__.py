"""Built-in checks, one file per check, grouped by layer. Discovered by degrade.registry."""
