"""nemo_kernel.cli"""
