"""Keeping the services alive and telling systemd (and the terminal) the truth about their state.

- :mod:`~llmserver.supervision.sdnotify`: the ``sd_notify`` protocol (``READY=1``, ``WATCHDOG=1``,
  ``STOPPING=1``), one datagram to ``$NOTIFY_SOCKET``;
- :mod:`~llmserver.supervision.proxy`: the proxy's readiness and watchdog, from its health check;
- :mod:`~llmserver.supervision.runtime`: the runtime daemon's, checked over its own endpoint;
- :mod:`~llmserver.supervision.restart`: ``llmserver up``'s daemon restarted with back-off when it
  dies, as systemd's ``Restart=`` does for the units.
- :mod:`~llmserver.supervision.parent`: that daemon dies with ``up``, even when ``up`` is killed.
"""
