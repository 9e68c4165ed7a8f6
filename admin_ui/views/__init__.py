"""The console's pages and its JSON API, one module per area; each exposes ``routes``."""
