# -*- test-case-name: tests.test_asyncleaf -*-
"""A leaf resource whose ``GET``/``HEAD`` run one ``async def`` handler (``/stream``, ``/hls``).

:class:`AsyncLeaf` runs :meth:`AsyncLeaf.handle` with ``ensureDeferred`` and
returns ``NOT_DONE_YET``.  What the handler returns is written and the request
finished (a body), or left to the producer it started (``NOT_DONE_YET``); an
:class:`~streamsrv.errors.ApiError` it raises is rendered as the JSON error
model; anything else goes to the request's ``processingFailed`` (logged for
operators, a bare ``INTERNAL`` for the client).  A client that leaves while
the handler is still waiting (for the worker pool, the rate limiter, the
catalog) cancels it, as Klein's own resource does: the coroutine gets
``CancelledError`` at its ``await`` and nothing more is written.  A subclass
may first try :meth:`AsyncLeaf.answer_now`, which answers without a coroutine
when nothing has to wait (a range of a file whose credentials are cached) and
hands back a coroutine otherwise; nothing is registered for the client's
departure when there is nothing to cancel.

This module never writes a traceback, a file-system path or a secret to a
client, and never knows what a handler serves.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, ClassVar

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from streamsrv.errors import ApiError
from streamsrv.web.errors import render_error
from streamsrv.web.site import finish_response

__all__ = ["AsyncLeaf"]

log = Logger()


class AsyncLeaf(Resource):
    """A leaf whose ``GET`` and ``HEAD`` are answered by :meth:`handle`.

    Subclasses set :attr:`route` (the request's metrics and log label) and
    implement :meth:`handle`.
    """

    isLeaf = True

    #: ``request.route``: the label of the request in metrics and the access log.
    route: ClassVar[str] = "other"

    async def handle(self, request: Any) -> bytes | int:
        """Answer *request*: a body to send, or ``NOT_DONE_YET`` once a producer sends it.

        :raise ApiError: for an answer of the error model.
        """
        raise NotImplementedError

    def answer_now(self, request: Any) -> bytes | int | Coroutine[Any, Any, bytes | int]:
        """What :meth:`handle` would answer, if known without waiting; else the coroutine to run.

        The default is always :meth:`handle`'s coroutine.  An override answers
        (or raises) exactly as :meth:`handle` would, and must not have done
        anything that :meth:`handle` would do again when it returns a
        coroutine.
        """
        return self.handle(request)

    def render_GET(self, request: Any) -> int:
        """Answer at once if :meth:`answer_now` can, else run its coroutine (cancelled if the client goes)."""
        request.route = self.route
        try:
            answer = self.answer_now(request)
        except Exception:
            _failed(Failure(), request)
            return server.NOT_DONE_YET
        if isinstance(answer, (bytes, int)):
            _answer(answer, request)
            return server.NOT_DONE_YET
        d = ensureDeferred(answer)
        if not d.called:
            request.notifyFinish().addErrback(_client_gone, d)
        d.addCallbacks(_answer, _failed, callbackArgs=(request,), errbackArgs=(request,))
        return server.NOT_DONE_YET

    def render_HEAD(self, request: Any) -> int:
        """Headers of what GET would answer, without a body (the handler sees ``HEAD``)."""
        return self.render_GET(request)


def _client_gone(reason: Failure, d: Deferred[Any]) -> None:
    """The connection was lost before the handler finished: stop it where it waits."""
    d.cancel()


def _answer(body: bytes | int, request: Any) -> None:
    if body is not server.NOT_DONE_YET:
        assert isinstance(body, bytes)
        finish_response(request, body)


def _failed(failure: Failure, request: Any) -> None:
    if failure.check(ApiError):
        finish_response(request, render_error(request, failure.value))
    elif failure.check(CancelledError) and (request.finished or request._disconnected):
        log.debug("{route}: the client left; its handler was cancelled", route=request.route)
    else:
        request.processingFailed(failure)
