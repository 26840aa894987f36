"""sparse-transfer: how well do sparse ImageNet models transfer, as a distributed sweep system."""

__version__ = "0.1.0"
