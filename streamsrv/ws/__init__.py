"""The ``/ws`` WebSocket: events from the hub to clients, playback reports from clients.

See :mod:`streamsrv.ws.protocol` (the wire protocol), :mod:`streamsrv.ws.resource` (the
``/ws`` leaf), :mod:`streamsrv.ws.service` (revalidation and shutdown), :mod:`streamsrv.ws.limits`
(limits, counters, the message token bucket), :mod:`streamsrv.ws.playback` (playback reports) and
:mod:`streamsrv.ws.direct` (event frames written straight into a plain TCP socket).
"""
