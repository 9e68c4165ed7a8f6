"""The proxy's HTTP connections: the limits aiohttp does not enforce (``handler``: deadlines, the
connection bound, rejections in the OpenAI envelope) and the descriptor budget (``limits``)."""
