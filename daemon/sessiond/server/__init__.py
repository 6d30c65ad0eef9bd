"""The Unix socket server and its ops."""
