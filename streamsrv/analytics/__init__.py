"""Listening analytics: sessions derived from streaming activity and client reports, stored and queried.

:mod:`.store` keeps sessions and events (SQLite in the data dir by default,
PostgreSQL by ``STREAMSRV_ANALYTICS_DSN``), :mod:`.sessions` derives listening
sessions from requests and playback reports, :mod:`.queries` answers the
analytics API.  See ``docs/modules/analytics.md``.  Nothing in this package
knows HTTP routes or twistd; it never keeps a full IP address.
"""
