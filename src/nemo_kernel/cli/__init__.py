"""The ``nemo`` command line."""

from nemo_kernel.cli.app import app, main

__all__ = ["app", "main"]
