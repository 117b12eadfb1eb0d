"""nemo_kernel.store"""
