"""nemo_kernel.security"""
