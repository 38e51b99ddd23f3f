# -*- test-case-name: tests.test_jobs -*-
"""What a failed worker-pool job means to a client: one mapping to the contract's errors.

Every route that runs work in :class:`~streamsrv.audio.workers.WorkerPool`
(transcodes, HLS segments, waveforms, spectra) answers the pool's own
failures the same way: a full or stopped pool is 503 ``UNAVAILABLE`` with
``Retry-After``, a file that cannot be decoded is ``UNSUPPORTED_MEDIA``, a
worker that died is ``INTERNAL``.  :func:`job_error` is that rule, as a pure
function of the exception.  It never takes a request, never renders and never
logs: the caller names the job in its own log line (a crash is worth one).
"""

from __future__ import annotations

from typing import Final

from streamsrv.audio.decode_errors import DecodeError
from streamsrv.audio.workers import PoolFull, WorkerCrashed
from streamsrv.errors import ApiError

__all__ = ["BUSY_MESSAGE", "JOB_FAILURES", "job_error"]

#: The message of a 503 when the pool's queue is full (or the pool stopped).
BUSY_MESSAGE: Final = "The server is busy; try again shortly."

#: The failures of :meth:`WorkerPool.submit` that :func:`job_error` maps
#: (``PoolStopped`` is a ``PoolFull``); a job's other exceptions are the caller's.
JOB_FAILURES: Final = (PoolFull, DecodeError, WorkerCrashed)


def job_error(error: BaseException, *, busy: str = BUSY_MESSAGE) -> ApiError:
    """The contract error for a job that failed with *error* (one of :data:`JOB_FAILURES`).

    :param busy: the message of the 503 (a route may say what it is busy with).
    :raise TypeError: for an exception that is not a job failure.
    """
    if isinstance(error, PoolFull):
        return ApiError("UNAVAILABLE", busy, {"Retry-After": str(error.retry_after_s)})
    if isinstance(error, DecodeError):
        return ApiError("UNSUPPORTED_MEDIA", "This file cannot be decoded.")
    if isinstance(error, WorkerCrashed):
        return ApiError("INTERNAL")
    raise TypeError(f"not a worker-pool job failure: {type(error).__name__}")
