"""An application module that cannot be imported (a redeploy that fails to build)."""

raise ImportError("rayscale_serve_broken cannot be imported (on purpose)")
