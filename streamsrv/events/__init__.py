"""Events: the hub that carries them between the parts of the daemon and between processes.

See :mod:`streamsrv.events.hub`.
"""

from streamsrv.events.hub import (
    SYSTEM_CHANNEL,
    HubStats,
    IEventHub,
    InProcessHub,
    RedisHub,
    Subscription,
    make_hub,
    track_channel,
    user_channel,
)

__all__ = [
    "SYSTEM_CHANNEL",
    "HubStats",
    "IEventHub",
    "InProcessHub",
    "RedisHub",
    "Subscription",
    "make_hub",
    "track_channel",
    "user_channel",
]
