"""nemo_kernel.access"""
