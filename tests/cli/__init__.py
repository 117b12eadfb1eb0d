"""Tests of the `nemo` command line."""
