"""Identity the API verifies: users, passwords, application credentials and signed tokens."""
