"""Notifications: the outbox, its channels, templates, preferences, quiet hours and caps.

A domain part: it raises :class:`streamsrv.errors.ApiError` and returns data, and must never
import ``streamsrv.web``, ``streaming``, ``hls``, ``ws``, ``middleware`` or ``tap`` nor take a
``request``.
"""
