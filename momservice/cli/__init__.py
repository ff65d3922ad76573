"""Command-line tools: ``momctl``."""
