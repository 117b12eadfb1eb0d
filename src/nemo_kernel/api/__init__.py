"""The REST API (FastAPI): one router per resource under ``/api/v1``."""

from nemo_kernel.api.app import create_app

__all__ = ["create_app"]
