"""Every test here checks that no full API key reached a log file."""

from tests.faults.logscan import no_secret_in_logs

__all__ = ["no_secret_in_logs"]
