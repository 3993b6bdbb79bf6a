"""Floor estimates (D5xx): what the eval loss cannot go below. Never a verdict."""
