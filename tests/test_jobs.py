"""``job_error``: the worker pool's failures as the contract's errors, in one place."""

from __future__ import annotations

from twisted.trial import unittest

from streamsrv.audio.decode import CORRUPT_FILE, DecodeError
from streamsrv.audio.jobs import BUSY_MESSAGE, JOB_FAILURES, job_error
from streamsrv.audio.workers import PoolFull, PoolStopped, WorkerCrashed


class JobErrorTests(unittest.SynchronousTestCase):
    """Each pool failure maps to one status, code and message."""

    def test_pool_full(self) -> None:
        """A full queue is 503 UNAVAILABLE with the pool's Retry-After and the default message."""
        error = job_error(PoolFull(7))
        self.assertEqual((error.status, error.code, error.message), (503, "UNAVAILABLE", BUSY_MESSAGE))
        self.assertEqual(error.headers, {"Retry-After": "7"})

    def test_pool_stopped_and_busy_message(self) -> None:
        """A stopped pool answers like a full one; a route may word the message its own way."""
        error = job_error(PoolStopped(), busy="Busy transcoding.")
        self.assertEqual((error.code, error.message), ("UNAVAILABLE", "Busy transcoding."))
        self.assertEqual(error.headers, {"Retry-After": "5"})

    def test_decode_error(self) -> None:
        """An undecodable file is UNSUPPORTED_MEDIA, without the decoder's reason."""
        error = job_error(DecodeError(CORRUPT_FILE))
        self.assertEqual((error.code, error.message), ("UNSUPPORTED_MEDIA", "This file cannot be decoded."))

    def test_worker_crashed(self) -> None:
        """A dead worker is a plain INTERNAL: nothing about the crash reaches the client."""
        error = job_error(WorkerCrashed("the worker process running this job died"))
        self.assertEqual((error.status, error.code), (500, "INTERNAL"))
        self.assertNotIn("worker", error.message)

    def test_other_exceptions_are_not_mapped(self) -> None:
        """Anything that is not a job failure is refused, so a bug is never dressed as a 5xx answer."""
        self.assertNotIn(ValueError, JOB_FAILURES)
        self.assertRaises(TypeError, job_error, ValueError("a job's own error"))
