"""The admin console: an aiohttp sub-application mounted at ``/admin`` (see ``admin_ui.app``)."""
