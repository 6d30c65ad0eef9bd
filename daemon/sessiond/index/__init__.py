"""The index: decoding session files and answering questions about them."""
