"""The rayscale command line (typer + rich)."""
