"""nemo_kernel.orchestrator"""
