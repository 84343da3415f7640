"""The package version: a leaf module, so that every layer can read it without
importing the package root (which imports every layer)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdsde")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
