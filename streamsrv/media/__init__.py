"""What names a track and identifies a file version, below both ``audio/`` and ``streaming/``.

:mod:`streamsrv.media.paths` turns the raw tail of a URL into a file inside
the media root (or refuses it); :mod:`streamsrv.media.identity` makes the
entity-tag of a file version.  Pure functions over values and ``stat``
results: nothing here opens a file for reading, writes, logs or knows a
request.
"""
