"""pervma: an executable model of Linux's per-VMA locking."""

__version__ = "0.1.0"

__all__ = ["__version__"]
