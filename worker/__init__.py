"""Capillary → Adobe Experience Platform streaming worker."""

__version__ = "0.1.0"
