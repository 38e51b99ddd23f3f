"""The twistd plugin: ``twistd -n streamsrv``.  All wiring is in streamsrv.tap."""

from twisted.application.service import ServiceMaker

streamsrv = ServiceMaker(
    "streamsrv", "streamsrv.tap", "On-demand audio streaming daemon", "streamsrv"
)
