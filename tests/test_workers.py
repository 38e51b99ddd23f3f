"""Tests for :mod:`streamsrv.audio.workers`, with real worker processes and the real reactor.

Each test starts a pool of two spawned workers (about a quarter of a second)
and stops it in cleanup.  Jobs live in :mod:`tests.workerjobs` so that they
pickle by name; the files they write to let a test see what ran where.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.python import threadable
from twisted.trial import unittest

from streamsrv.audio.decode import DecodeError
from streamsrv.audio.workers import PoolFull, PoolStopped, WorkerCrashed, WorkerPool
from streamsrv.health.checks import DEGRADED, FAILING, OK
from tests import audiogen, workerjobs

#: How long a test waits for a worker to reach a point before failing.
WAIT_S = 10.0

#: Polling interval while waiting for a worker.
POLL_S = 0.02


async def sleep(seconds: float) -> None:
    """Let the reactor run for ``seconds``."""
    await task.deferLater(reactor, seconds, lambda: None)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait, with the reactor running, until ``condition()`` is true."""
    waited = 0.0
    while not condition():
        if waited > WAIT_S:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(POLL_S)
        waited += POLL_S


async def failure_of(d: Deferred[Any], *types: type[BaseException]) -> BaseException:
    """Await ``d``, which must fail with one of ``types``; return the exception."""
    try:
        result = await d
    except types as e:
        return e
    raise AssertionError(f"expected {types}, got result {result!r}")


def process_exists(pid: int) -> bool:
    """Whether a process with this id exists (zombies count: they are not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PoolTestCase(unittest.TestCase):
    """Makes started pools that are stopped after the test, and a scratch directory."""

    def pool(self, size: int = 2, max_queue: int = 4, **kwargs: Any) -> WorkerPool:
        """A started pool, stopped (and waited for) at cleanup."""
        pool = WorkerPool(reactor, size=size, max_queue=max_queue, **kwargs)
        pool.startService()
        self.addCleanup(pool.stopService)
        return pool

    def scratch(self) -> Path:
        """An absolute, empty directory for files the workers write."""
        path = Path(self.mktemp()).resolve()
        path.mkdir(parents=True)
        return path

    def blocker(self, pool: WorkerPool, base: Path, name: str, key: str | None = None) -> Deferred[int]:
        """Submit a job that holds its worker until :meth:`release` is called for ``name``."""
        return pool.submit(
            workerjobs.block_until_gone, str(base / f"{name}.go"), str(base / f"{name}.pid"), key=key
        )

    def release(self, base: Path, name: str) -> None:
        """Let the blocker called ``name`` finish."""
        (base / f"{name}.go").touch()

    async def started(self, base: Path, name: str) -> int:
        """Wait until the blocker called ``name`` runs; return its worker's pid."""
        pid_file = base / f"{name}.pid"
        await until(lambda: pid_file.exists() and pid_file.read_text() != "", f"{name} to start")
        return int(pid_file.read_text())


class ResultTests(PoolTestCase):
    """Jobs run in other processes and their outcomes come back."""

    async def test_result_on_reactor_thread(self) -> None:
        """A job's result fires its Deferred on the reactor thread."""
        pool = self.pool()
        threads: list[bool] = []

        def note(result: int) -> int:
            threads.append(threadable.isInIOThread())
            return result

        self.assertEqual(await pool.submit(workerjobs.add, 2, 3).addCallback(note), 5)
        self.assertEqual(threads, [True])
        self.assertEqual(pool.completed, 1)

    async def test_runs_in_another_process(self) -> None:
        """Jobs run in worker processes, never in the daemon's."""
        pool = self.pool()
        self.assertNotEqual(await pool.submit(workerjobs.pid), os.getpid())

    async def test_exception_type(self) -> None:
        """An exception raised in the worker fails the Deferred with the same type and data."""
        pool = self.pool()
        error = await failure_of(pool.submit(workerjobs.fail_with, 7), workerjobs.UnusualError)
        assert isinstance(error, workerjobs.UnusualError)
        self.assertEqual(error.code, 7)
        self.assertEqual(pool.completed, 1)

    async def test_decode_error_crosses(self) -> None:
        """A DecodeError keeps its reason across the process boundary, and nothing else."""
        pool = self.pool()
        error = await failure_of(pool.submit(workerjobs.fail_decoding), DecodeError)
        assert isinstance(error, DecodeError)
        self.assertEqual((error.reason, str(error)), ("corrupt file", "corrupt file"))

    async def test_decode_in_worker(self) -> None:
        """Decoding a real file is a job like any other."""
        path = audiogen.write_tone(self.scratch() / "tone.flac", "flac", 0.5)
        pool = self.pool()
        self.assertEqual(await pool.submit(workerjobs.decoded_frames, str(path), 22050), (2, 11025))

    def test_refuses_local_functions(self) -> None:
        """A lambda cannot be pickled by name: refused at once with TypeError."""
        pool = WorkerPool(reactor, size=1)
        self.assertRaises(TypeError, pool.submit, lambda: 1)

    async def test_not_running(self) -> None:
        """Before start and after stop, submit fails with PoolStopped, a PoolFull."""
        pool = WorkerPool(reactor, size=1)
        error = await failure_of(pool.submit(workerjobs.add, 1, 1), PoolStopped)
        assert isinstance(error, PoolFull)
        self.assertGreaterEqual(error.retry_after_s, 1)


class CoalescingTests(PoolTestCase):
    """Identical jobs run once."""

    async def test_same_key_runs_once(self) -> None:
        """Twenty submissions with one key run the job once; all twenty get its result."""
        base = self.scratch()
        record = base / "runs"
        pool = self.pool()
        waiters = [pool.submit(workerjobs.record, str(record), "x", 0.3, key="k") for _ in range(20)]
        results = [await d for d in waiters]
        self.assertEqual(len(set(results)), 1)
        self.assertEqual(len(record.read_text().splitlines()), 1)
        self.assertEqual((pool.coalesced, pool.completed), (19, 1))

    async def test_different_keys_run_apart(self) -> None:
        """Different keys (or none) are different jobs."""
        base = self.scratch()
        record = base / "runs"
        pool = self.pool()
        await pool.submit(workerjobs.record, str(record), "a", key="a")
        await pool.submit(workerjobs.record, str(record), "b", key="b")
        await pool.submit(workerjobs.record, str(record), "c")
        self.assertEqual([line.split()[0] for line in record.read_text().splitlines()], ["a", "b", "c"])
        self.assertEqual(pool.coalesced, 0)

    async def test_key_reusable_after_finish(self) -> None:
        """A key is only coalesced while its job is queued or running; afterwards it runs again."""
        record = self.scratch() / "runs"
        pool = self.pool()
        await pool.submit(workerjobs.record, str(record), "x", key="k")
        await pool.submit(workerjobs.record, str(record), "x", key="k")
        self.assertEqual(len(record.read_text().splitlines()), 2)


class QueueTests(PoolTestCase):
    """The queue is bounded, and queued jobs can be cancelled."""

    async def test_pool_full(self) -> None:
        """With every worker busy and the queue full, submit fails with PoolFull and a Retry-After."""
        base = self.scratch()
        pool = self.pool(max_queue=1)
        running = [self.blocker(pool, base, "a"), self.blocker(pool, base, "b")]
        queued = pool.submit(workerjobs.add, 1, 2)
        self.assertEqual((pool.running, pool.queued), (2, 1))
        error = await failure_of(pool.submit(workerjobs.add, 3, 4), PoolFull)
        assert isinstance(error, PoolFull)
        self.assertGreaterEqual(error.retry_after_s, 1)
        self.release(base, "a")
        self.release(base, "b")
        for d in running:
            await d
        self.assertEqual(await queued, 3)

    async def test_joining_never_full(self) -> None:
        """Joining a queued job by key adds no work, so a full queue does not refuse it."""
        base = self.scratch()
        pool = self.pool(max_queue=1)
        blockers = [self.blocker(pool, base, "a"), self.blocker(pool, base, "b")]
        first = pool.submit(workerjobs.add, 1, 2, key="sum")
        second = pool.submit(workerjobs.add, 1, 2, key="sum")
        self.release(base, "a")
        self.release(base, "b")
        for d in blockers:
            await d
        self.assertEqual((await first, await second), (3, 3))

    async def test_cancel_queued_job(self) -> None:
        """A queued job whose only caller cancels never runs."""
        base = self.scratch()
        record = base / "runs"
        pool = self.pool()
        blockers = [self.blocker(pool, base, "a"), self.blocker(pool, base, "b")]
        queued = pool.submit(workerjobs.record, str(record), "queued")
        queued.cancel()
        await failure_of(queued, CancelledError)
        self.assertEqual(pool.queued, 0)
        self.release(base, "a")
        self.release(base, "b")
        for d in blockers:
            await d
        self.assertEqual(await pool.submit(workerjobs.add, 1, 1), 2)
        self.assertFalse(record.exists())

    async def test_cancel_one_of_two_callers(self) -> None:
        """A queued job runs as long as one of its callers still waits."""
        base = self.scratch()
        pool = self.pool()
        blockers = [self.blocker(pool, base, "a"), self.blocker(pool, base, "b")]
        leaving = pool.submit(workerjobs.add, 2, 2, key="four")
        staying = pool.submit(workerjobs.add, 2, 2, key="four")
        leaving.cancel()
        await failure_of(leaving, CancelledError)
        self.assertEqual(pool.queued, 1)
        self.release(base, "a")
        self.release(base, "b")
        for d in blockers:
            await d
        self.assertEqual(await staying, 4)

    async def test_cancel_running_job(self) -> None:
        """A running job cannot be stopped: its caller is detached, the job finishes,
        and a caller who joins it by key meanwhile gets its result."""
        base = self.scratch()
        pool = self.pool()
        first = self.blocker(pool, base, "a", key="a")
        pid = await self.started(base, "a")
        first.cancel()
        await failure_of(first, CancelledError)
        self.assertEqual(pool.running, 1)
        later = self.blocker(pool, base, "a", key="a")
        self.release(base, "a")
        self.assertEqual(await later, pid)
        self.assertEqual((pool.coalesced, pool.completed), (1, 1))


class CrashTests(PoolTestCase):
    """A dead worker fails its job, and the pool recovers."""

    async def test_killed_worker(self) -> None:
        """SIGKILL of a worker mid-job fails the job with WorkerCrashed; later jobs succeed."""
        base = self.scratch()
        pool = self.pool()
        job = self.blocker(pool, base, "a")
        os.kill(await self.started(base, "a"), signal.SIGKILL)
        error = await failure_of(job, WorkerCrashed)
        self.assertIsInstance(error, BrokenProcessPool)
        self.assertEqual(pool.crashes, 1)
        self.assertEqual(pool.check().status, DEGRADED)
        self.assertEqual(await pool.submit(workerjobs.add, 20, 22), 42)
        self.assertEqual(pool.check().status, OK)

    async def test_queued_jobs_survive_a_crash(self) -> None:
        """Jobs still queued when a worker dies run on the new workers, and the
        dead executor's processes are all reaped."""
        base = self.scratch()
        pool = self.pool(size=2)
        job = self.blocker(pool, base, "a")
        other = self.blocker(pool, base, "b")
        queued = pool.submit(workerjobs.add, 1, 1)
        await self.started(base, "a")
        await self.started(base, "b")
        os.kill(int((base / "a.pid").read_text()), signal.SIGKILL)
        await failure_of(job, WorkerCrashed)
        await failure_of(other, WorkerCrashed)  # CPython fails every job of a broken executor
        self.assertEqual(await queued, 2)
        await pool.stopService()
        self.assertEqual(multiprocessing.active_children(), [])  # the broken executor's too

    async def test_crash_loop_is_failing(self) -> None:
        """Three crashes with no job finishing between them make the check failing."""
        pool = self.pool(size=1, preload=())
        for _ in range(3):
            await failure_of(pool.submit(workerjobs.die), WorkerCrashed)
        check = pool.check()
        self.assertEqual((check.status, check.detail["crashes"]), (FAILING, 3))
        self.assertEqual(await pool.submit(workerjobs.add, 1, 1), 2)
        self.assertEqual(pool.check().status, OK)


class StopTests(PoolTestCase):
    """Stopping drops queued jobs, finishes running ones and leaves no process behind."""

    async def test_stop_leaves_no_processes(self) -> None:
        """After stopService, every worker process has exited and been reaped."""
        base = self.scratch()
        record = base / "runs"
        pool = self.pool()
        for label in "abcd":
            await pool.submit(workerjobs.record, str(record), label)
        pids = {int(line.split()[1]) for line in record.read_text().splitlines()}
        await pool.stopService()
        self.assertEqual(multiprocessing.active_children(), [])
        self.assertEqual([pid for pid in pids if process_exists(pid)], [])

    async def test_stop_finishes_running_drops_queued(self) -> None:
        """A running job completes during stop; a queued one fails with PoolStopped;
        the reactor keeps running meanwhile."""
        base = self.scratch()
        pool = self.pool(size=1)
        running = self.blocker(pool, base, "a")
        queued = pool.submit(workerjobs.add, 1, 1)
        pid = await self.started(base, "a")
        stopping = pool.stopService()
        await failure_of(queued, PoolStopped)
        await sleep(0.1)  # the reactor is not blocked by the stop
        self.assertFalse(stopping.called)
        self.release(base, "a")
        self.assertEqual(await running, pid)
        await stopping
        await failure_of(pool.submit(workerjobs.add, 1, 1), PoolStopped)

    async def test_stop_timeout_kills(self) -> None:
        """A job still running after the stop timeout is killed and fails with WorkerCrashed."""
        base = self.scratch()
        pool = self.pool(size=1, stop_timeout_s=0.2)
        running = self.blocker(pool, base, "a")
        pid = await self.started(base, "a")
        await pool.stopService()
        await failure_of(running, WorkerCrashed)
        self.assertFalse(process_exists(pid))


class CheckTests(PoolTestCase):
    """The health check reports ok, degraded and failing."""

    async def test_states(self) -> None:
        """Idle is ok; a queue more than 75% full is degraded; a stopped pool is failing."""
        base = self.scratch()
        pool = self.pool(max_queue=4)
        check = pool.check()
        self.assertEqual(check.status, OK)
        self.assertEqual(
            {k: check.detail[k] for k in ("size", "running", "queued", "max_queue")},
            {"size": 2, "running": 0, "queued": 0, "max_queue": 4},
        )
        blockers = [self.blocker(pool, base, "a"), self.blocker(pool, base, "b")]
        queued = [pool.submit(workerjobs.add, i, i) for i in range(3)]
        self.assertEqual(pool.check().status, OK)  # 3 of 4 is not more than 75%
        queued.append(pool.submit(workerjobs.add, 3, 3))
        self.assertEqual(pool.check().status, DEGRADED)
        self.release(base, "a")
        self.release(base, "b")
        for d in blockers + queued:
            await d
        self.assertEqual(pool.check().status, OK)
        await pool.stopService()
        self.assertEqual(pool.check().status, FAILING)

    def test_size_default(self) -> None:
        """Without a size, the pool has one worker per CPU available to the process."""
        pool = WorkerPool(reactor)
        self.assertGreaterEqual(pool.size, 1)
        self.assertLessEqual(pool.size, os.cpu_count() or 1)
        self.assertEqual((pool.running, pool.queued, pool.completed, pool.coalesced), (0, 0, 0, 0))
