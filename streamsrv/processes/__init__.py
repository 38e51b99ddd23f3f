"""``STREAMSRV_WORKERS=N``: N worker processes serving the same listening sockets.

With one worker (the default) none of this runs: twistd's process is the
daemon.  With N > 1, twistd's process becomes a supervisor that does no HTTP
(:mod:`~streamsrv.processes.supervisor`): it binds every ``--listen``
endpoint once and hands the sockets to N worker processes
(:mod:`~streamsrv.processes.sockets`), each running
:mod:`~streamsrv.processes.worker`, which builds the normal service tree with
``streamsrv.tap.makeWorkerService`` on the adopted sockets; the kernel gives
each new connection to whichever worker accepts it first.  The supervisor
restarts a worker that dies, relays the workers' log lines
(:mod:`~streamsrv.processes.relay`), and on SIGTERM stops them all after
their grace period.  Each worker answers for itself
(:mod:`~streamsrv.processes.identity`): ``X-Streamsrv-Worker`` on every
response, a ``worker`` label on every metric, a ``worker`` field in every log
event.  What must be shared between workers goes through Redis or the data
directory, as between hosts (docs/modules/processes.md).

This package must never accept a connection in the supervisor, never leave a
worker running once the supervisor is gone, and never import
:mod:`streamsrv.tap` except in its worker entry point, which nothing else
imports: the composition root imports this package, not the other way round.
"""
