"""The `shelf` command line: the entrypoint and the composition root."""
