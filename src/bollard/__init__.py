"""Bollard: a virtual-machine cluster manager."""

__version__ = "0.1.0"
