"""NEMO Kernel: the control plane ("kernel space") of the NEMO meta-operating system."""

__version__ = "0.1.0"
__all__ = ["__version__"]
