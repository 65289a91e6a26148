"""rayscale: elastic Ray clusters driven by a fast, pure planner."""

__version__ = "0.1.0"
