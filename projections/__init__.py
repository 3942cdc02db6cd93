"""Read models rebuilt from the event history, each with its tracking position."""
