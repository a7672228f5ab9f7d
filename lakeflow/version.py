"""The lakeflow version, recorded in every commit's `engineInfo`."""

__version__ = "0.1.0"

__all__ = ["__version__"]
