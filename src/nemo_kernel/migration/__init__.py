"""nemo_kernel.migration"""
