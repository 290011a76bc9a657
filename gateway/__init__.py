"""Group Gateway: one service between a company group's internal apps and its WeChat components."""

__version__ = "0.1.0"

__all__ = ["__version__"]
