"""nemo_kernel.web"""
