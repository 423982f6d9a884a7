"""dltricks: the companion package of *Training Deep Networks*."""

__version__ = "0.1.0"
