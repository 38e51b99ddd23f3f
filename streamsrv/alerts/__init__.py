"""Alerts: rules over the daemon's own measures, evaluated on a timer, and Alertmanager's webhook.

``rules`` parses the rules file, ``measures`` computes each measure from
snapshots of the metrics registry, ``engine`` is the per-rule state machine
(inactive → pending → firing → resolved, with hysteresis), ``dispatch``
announces firings and resolutions (``system`` events, notifications, the
``streamsrv_alerts_firing`` gauge, recent history), ``lease`` keeps one
evaluator at a time across processes and hosts, ``service`` is the evaluator
on its timer, ``alertmanager`` turns Alertmanager's webhook into the same
announcements, and ``factory.make_alerts`` builds it all for the composition
root.  This package never imports ``streamsrv.web``, the stream, HLS or
WebSocket adapters or ``tap``, and never takes a request: it raises
``streamsrv.errors.ApiError`` and returns data.
"""
