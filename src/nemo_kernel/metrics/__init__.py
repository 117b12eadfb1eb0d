"""nemo_kernel.metrics"""
