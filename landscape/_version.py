"""The package version, in a module of its own so library modules can read it without importing the root."""
__version__ = "0.3.0"
