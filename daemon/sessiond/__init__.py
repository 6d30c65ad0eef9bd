"""sessiond: keeps the codetether agent's sessions indexed and answers resume queries fast."""

from sessionctl import __version__

__all__ = ["__version__"]
