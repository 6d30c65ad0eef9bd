"""sessionctl: the client library and CLI of sessiond. Standard library only."""

__version__ = "0.1.0"

from sessionctl.client import Client, DaemonError, DaemonUnreachable, DaemonUntrusted

__all__ = ["Client", "DaemonError", "DaemonUnreachable", "DaemonUntrusted", "__version__"]
