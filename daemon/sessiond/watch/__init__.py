"""Finding sessions folders, watching them, and feeding the index."""
