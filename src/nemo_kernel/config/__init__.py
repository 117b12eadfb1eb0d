"""Configuration (pydantic-settings, environment ``NEMO_*``) and the embedded default clusters."""

from nemo_kernel.config.defaults import default_clusters_yaml, load_clusters_file
from nemo_kernel.config.settings import Settings, default_data_dir

__all__ = ["Settings", "default_clusters_yaml", "default_data_dir", "load_clusters_file"]
