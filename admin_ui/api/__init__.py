"""The admin console's JSON API (``/admin/api/...``), mounted by the console's sub-application."""
