"""The application layer: what the CLI and the API both call."""
