"""The admin web UI."""
