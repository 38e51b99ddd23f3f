"""The ``/ws`` WebSocket: events from the hub to clients, playback reports from clients.

See :mod:`streamsrv.ws.protocol` (the wire protocol) and :mod:`streamsrv.ws.resource`.
"""
