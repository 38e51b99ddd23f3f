"""Notifications: preferences, quiet hours, frequency caps, templates and the durable outbox.

The domain core of ``POST /api/v1/notifications`` and the preference routes
(see ``docs/modules/notifications.md``): :mod:`.preferences` validates a
user's document, :mod:`.quiet` and :mod:`.caps` are pure decisions,
:mod:`.templates` renders with a sandboxed Jinja2, :mod:`.outbox` keeps
notifications and their deliveries in SQLite or PostgreSQL, and
:mod:`.channels` sends email (SMTP), SMS (the Twilio API) and Web Push.  Nothing in this
package knows HTTP, a ``request`` or twistd; it raises
:class:`streamsrv.errors.ApiError` and returns values.
"""
