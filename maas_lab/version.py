"""The package version: the one place it is written (pyproject reads it, hatch's version
source), in a module of its own so the server and CLI need not import the package."""

__version__ = "0.1.0"
