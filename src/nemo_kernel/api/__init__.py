"""nemo_kernel.api"""
