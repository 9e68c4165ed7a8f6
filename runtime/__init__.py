"""llmserver runtime daemon: keeps models loaded and streams tokens over ZeroMQ."""

__version__ = "0.1.0"
