"""nemo_kernel.ppef"""
