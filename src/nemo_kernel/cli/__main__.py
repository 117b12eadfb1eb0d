"""``python -m nemo_kernel.cli`` is ``nemo``."""

from nemo_kernel.cli.app import main

main()
