# -*- test-case-name: tests.test_guard -*-
"""One admission path for every protected route: credentials, revocation, rate limits, permission.

The guard is an HTTP adapter: it reads a request's query and headers, sets
``RateLimit-*`` headers and logs security events; the pure parts it stands on
(JWT verification, signed URLs, principals, revocation) live in
:mod:`streamsrv.auth`.  :meth:`Guard.admit` turns a request into a
:class:`~streamsrv.auth.principal.Principal` or an
:class:`~streamsrv.errors.ApiError`, in this order:

1. **Credentials.**  A signed URL (the query carries ``sig`` or ``expires``)
   on routes that accept them; else ``Authorization: Bearer``; else the
   anonymous listener when ``STREAMSRV_ALLOW_ANONYMOUS`` is on; else 401.
   A signed URL authorises exactly the request it names (the backend bound
   every parameter into it), so its principal may do anything *to that
   request*; it is never accepted on routes that do not take signed URLs.
2. **Revocation** of JWTs (jti, family, subject), from the in-process
   revocation snapshot: no I/O per request, unless another process of the
   host has just stored a revocation (its doorbell rang): then the snapshot
   is reloaded before a bearer token is trusted, so a revocation holds on
   every worker once its call has returned.
3. **Rate limits**: the client address's bucket always, the user's when the
   caller is known; stream starts and API calls draw from separate
   policies.  The route says whether a request starts a stream (the guard
   never looks at URLs or ``Range`` to guess it).  A refused credential still draws from the address's bucket,
   so guessing tokens is rate limited too.  ``RateLimit-*`` headers are set
   on every guarded response.
4. **Permission** of the route.

Every refusal that may be hostile is a security event.  Nothing here logs or
returns a credential.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from streamsrv.auth.jwt import JwtVerifier, bearer_token
from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.signing import (
    SignedUrlError,
    SigningKey,
    decode_signed_path,
    parse_query_pairs,
    verify,
)
from streamsrv.errors import ApiError
from streamsrv.middleware.audit import security_event
from streamsrv.middleware.ratelimit import Decision, IRateLimiter, Policies, Policy, keys_for, refusal_message

#: Verified access tokens remembered (LRU), and for how long at most: a
#: token whose key was rotated out of the JWKS stays accepted that long.
TOKEN_CACHE_SIZE = 10_000
TOKEN_CACHE_TTL_S = 300.0

#: Signed URLs remembered after verification (request target and client address).
SIGNED_CACHE_SIZE = 10_000

#: :func:`bearer_token` of recent ``Authorization`` values (a player sends the same one on every
#: range): a pure function of its argument, and a malformed value raises every time (not cached).
_bearer_of = functools.lru_cache(maxsize=1024)(bearer_token)

#: Query parameters that mark a request as carrying a signed URL.
_SIGNED_MARKERS = (b"sig=", b"expires=")


class RevocationChecker(Protocol):
    """What the guard needs of the revocation cache."""

    def is_revoked(self, principal: Principal) -> bool:
        """Whether *principal*'s token has been revoked."""


@dataclass(frozen=True)
class Admission:
    """A request let in: who, and (for signed URLs) until when and what was bound."""

    principal: Principal
    signed_expires: int | None = None
    bound: dict[str, str] | None = None


class Guard:
    """Authenticate, rate-limit and authorise requests.

    :param verifier: JWT verification, or ``None`` when no JWT is configured.
    :param url_keys: signed-URL keys, current first (empty: signed URLs refused).
    :param url_max_ttl_s: furthest ``expires`` accepted.
    :param revocations: the revocation snapshot, or ``None``.  When it also
        has ``current() -> bool`` and ``catch_up() -> Deferred`` (the
        :class:`~streamsrv.auth.revocation.RevocationCache` does: the host's
        doorbell), a bearer token is checked only once the snapshot is current.
    :param limiter: the rate limiter, or ``None`` for no limits.
    :param policies: the four rate-limit policies.
    :param anonymous: the principal for credential-less requests, or ``None``
        when they must authenticate.
    :param clock: time source for signed-URL expiry.
    """

    def __init__(
        self,
        *,
        verifier: JwtVerifier | None,
        url_keys: Sequence[SigningKey],
        url_max_ttl_s: int,
        revocations: RevocationChecker | None,
        limiter: IRateLimiter | None,
        policies: Policies,
        anonymous: Principal | None,
        clock: IReactorTime,
    ) -> None:
        self._verifier = verifier if verifier is not None and verifier.configured else None
        self._url_keys = tuple(url_keys)
        self._url_max_ttl_s = url_max_ttl_s
        self._revocations = revocations
        #: The checker's doorbell, when it has one (the revocation cache does).
        self._current: Callable[[], bool] | None = getattr(revocations, "current", None)
        self._catch_up: Callable[[], Deferred[None]] | None = getattr(revocations, "catch_up", None)
        self._limiter = limiter
        #: The limiter's synchronous check (the in-memory one has it; Redis does not).
        self._check_now: Callable[[list[tuple[Policy, str]]], Decision] | None = (
            getattr(limiter, "check_now", None) if limiter is not None else None
        )
        self._policies = policies
        self._anonymous = anonymous
        self._clock = clock
        self._token_cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._signed_cache: OrderedDict[tuple[bytes, str], Admission] = OrderedDict()

    async def admit(
        self,
        request: Any,
        *,
        permission: str | None,
        signed: bool = False,
        stream_start: bool = False,
    ) -> Admission:
        """Let *request* in or raise the fitting :class:`ApiError`.

        :param permission: what the route needs (``None``: any principal).
        :param signed: whether this route accepts signed URLs.
        :param stream_start: whether the route says this request starts a
            stream (it then draws from the stream-start buckets, else from
            the API ones).
        """
        try:
            admission = await self._authenticate(request, signed)
        except (AuthError, SignedUrlError) as e:
            security_event(request, e.code.lower(), reason=e.reason)
            # A refused credential still costs the address a token.
            await self.limit(request, None, stream_start=stream_start)
            raise ApiError(e.code, e.message) from None
        self._identify(request, admission)
        await self.limit(request, admission.principal, stream_start=stream_start)
        self._permit(request, admission.principal, permission)
        return admission

    def admit_now(
        self,
        request: Any,
        *,
        permission: str | None,
        signed: bool = False,
        stream_start: bool = False,
    ) -> Admission | None:
        """:meth:`admit` answered without waiting, or ``None`` if it would have to wait.

        It would wait for a bearer token that is not in the verified-token
        cache (or whose entry has expired) and for a limiter that answers only
        asynchronously (Redis); then nothing has been done (no event, no
        token taken, no header set) and the caller must use :meth:`admit`.
        Otherwise the same steps, checks, events and headers as :meth:`admit`,
        in the same order, and the same :class:`ApiError` refusals.
        """
        if self._limiter is not None and self._check_now is None:
            return None
        try:
            admission = self._authenticate_now(request, signed)
        except (AuthError, SignedUrlError) as e:
            security_event(request, e.code.lower(), reason=e.reason)
            self._limit_now(request, None, stream_start)
            raise ApiError(e.code, e.message) from None
        if admission is None:
            return None
        self._identify(request, admission)
        self._limit_now(request, admission.principal, stream_start)
        self._permit(request, admission.principal, permission)
        return admission

    def recall_plain(self, authorization: bytes | None, permission: str) -> Principal | None:
        """Who sends *authorization*, if :meth:`admit_now` would let them in at once with *permission*.

        For the ``/stream`` fast lane (:mod:`streamsrv.web.streamlane`), which
        must know before it takes a rate-limit token that nothing else could
        refuse or delay the request: a bearer token in the verified-token
        cache and fresh, revocations current and this one not revoked, or no
        credentials and anonymous access on; and the permission held.
        ``None`` for anything else (a signed URL is never asked here).  It
        logs, counts and sets nothing, so the caller can always fall back to
        the full path.
        """
        if self._limiter is not None and self._check_now is None:
            return None
        try:
            token = _bearer_of(authorization)
            if token is None:
                principal = self._anonymous if authorization is None else None
            else:
                principal = self._recalled(token)
                if principal is not None and not self._revocations_current():
                    return None
        except AuthError:
            return None
        if principal is None or not principal.can(permission):
            return None
        if token is not None and self._revocations is not None and self._revocations.is_revoked(principal):
            return None
        return principal

    def recall_signed(self, uri: bytes, client_ip: str, permission: str) -> Admission | None:
        """The admission of a signed URL that :meth:`admit_now` would take from its cache, for the fast lane.

        Only a URL verified before for this client address (the request
        target exactly) and not expired yet, whose principal has
        *permission*; else ``None``, having logged, counted and set nothing.
        """
        if self._limiter is not None and self._check_now is None:
            return None
        key = (uri, client_ip)
        cached = self._signed_cache.get(key)
        if cached is None or cached.signed_expires is None:
            return None
        if not self._clock.seconds() < cached.signed_expires or not cached.principal.can(permission):
            return None
        self._signed_cache.move_to_end(key)
        return cached

    @property
    def limited(self) -> bool:
        """Whether requests are rate limited (and so carry ``RateLimit-*`` headers)."""
        return self._limiter is not None

    def limit_plain(self, client_ip: str, principal: Principal, stream_start: bool) -> Decision | None:
        """Take *principal*'s rate-limit tokens as :meth:`admit_now` would, if there (:attr:`limited`).

        :return: the :class:`Decision`, whose ``RateLimit-*`` headers are the
            caller's to send; or ``None`` when the request would be refused
            or must wait for the limiter: then nothing was taken, and the full
            path answers it (and refuses it the same way).
        """
        check_now = self._check_now
        if check_now is None:
            return None
        decision = check_now(self._keys_of(client_ip, principal, stream_start))
        return decision if decision.allowed else None

    def require(self, request: Any, admission: Admission, permission: str) -> None:
        """Check one more permission for an admitted request (e.g. ``stream:hq``)."""
        self._permit(request, admission.principal, permission)

    @staticmethod
    def _identify(request: Any, admission: Admission) -> None:
        principal = admission.principal
        request.user = principal.sub
        request.auth_via = principal.via

    @staticmethod
    def _permit(request: Any, principal: Principal, permission: str | None) -> None:
        if permission is not None and not principal.can(permission):
            security_event(request, "forbidden", permission=permission, sub=principal.sub)
            raise ApiError("FORBIDDEN")

    def _authenticate_now(self, request: Any, signed: bool) -> Admission | None:
        """The credentials' admission, or ``None`` for a bearer token not verified (recently) yet."""
        query = request.uri.partition(b"?")[2]
        if signed and any(marker in query for marker in _SIGNED_MARKERS):
            return self._signed(request, query)
        token = bearer_token(request.getHeader(b"authorization"))
        if token is not None:
            principal = self._recalled(token)
            if principal is None or not self._revocations_current():
                return None
            return self._unless_revoked(principal)
        if self._anonymous is not None:
            return Admission(self._anonymous)
        raise AuthError("UNAUTHENTICATED", reason="no_credentials")

    async def _authenticate(self, request: Any, signed: bool) -> Admission:
        admission = self._authenticate_now(request, signed)
        if admission is not None:
            return admission
        token = bearer_token(request.getHeader(b"authorization"))
        assert token is not None  # the only case _authenticate_now leaves open
        principal = self._recalled(token)
        if principal is None:
            principal = await self._verified(token)
        if self._catch_up is not None and not self._revocations_current():
            await self._catch_up()
        return self._unless_revoked(principal)

    def _revocations_current(self) -> bool:
        return self._current is None or self._current()

    def _unless_revoked(self, principal: Principal) -> Admission:
        if self._revocations is not None and self._revocations.is_revoked(principal):
            raise AuthError("TOKEN_REVOKED", reason="revoked")
        return Admission(principal)

    def _recalled(self, token: str) -> Principal | None:
        """The principal of *token* from the verified-token cache, if there and fresh."""
        if self._verifier is None:
            raise AuthError("TOKEN_INVALID", reason="jwt_not_configured")
        cached = self._token_cache.get(token)
        if cached is None or not self._clock.seconds() < cached[1]:
            return None
        self._token_cache.move_to_end(token)
        return cached[0]

    async def _verified(self, token: str) -> Principal:
        """Verify an access token that :meth:`_recalled` does not know, and remember it.

        A player sends the same token with every range request of a track;
        verifying it once and remembering the result until it expires (at most
        :data:`TOKEN_CACHE_TTL_S`) takes the signature check and parsing off
        the hot path.  Revocation is still checked on every request.
        """
        assert self._verifier is not None  # _recalled refused the token otherwise
        self._token_cache.pop(token, None)  # a stale entry
        now = self._clock.seconds()
        principal = await self._verifier.verify(token, typ="access")
        valid_until = now + TOKEN_CACHE_TTL_S
        if principal.expires_at is not None:
            valid_until = min(valid_until, principal.expires_at)
        self._token_cache[token] = (principal, valid_until)
        if len(self._token_cache) > TOKEN_CACHE_SIZE:
            self._token_cache.popitem(last=False)
        return principal

    def _signed(self, request: Any, query: bytes) -> Admission:
        """Verify a signed URL, or recall it: a player asks the same URL for every range.

        The cache is keyed by the exact request target and the client address
        (an ``ip``-bound URL verifies per address) and an entry is used only
        before the URL's ``expires``; after that the URL is verified again so
        the answer is the precise ``URL_EXPIRED``.  Rotating keys restarts the
        process, so a cached verdict never outlives the keys that gave it.
        """
        key = (request.uri, request.client_ip)
        cached = self._signed_cache.get(key)
        if cached is not None and cached.signed_expires is not None:
            if self._clock.seconds() < cached.signed_expires:
                self._signed_cache.move_to_end(key)
                request.signed_expires = cached.signed_expires
                return cached
            del self._signed_cache[key]
        admission = self._verify_signed(request, query)
        self._signed_cache[key] = admission
        if len(self._signed_cache) > SIGNED_CACHE_SIZE:
            self._signed_cache.popitem(last=False)
        return admission

    def _verify_signed(self, request: Any, query: bytes) -> Admission:
        if not self._url_keys:
            raise SignedUrlError("SIGNATURE_INVALID", "no_keys")
        path = decode_signed_path(request.path)
        pairs = parse_query_pairs(query)
        bound = verify(
            path,
            pairs,
            keys=self._url_keys,
            now=self._clock.seconds(),
            max_ttl_s=self._url_max_ttl_s,
            client_ip=request.client_ip,
        )
        expires = int(dict(pairs)["expires"])
        principal = Principal(
            sub=bound.get("uid", "signed-url"),
            roles=frozenset(),
            permissions=frozenset({"*"}),
            via="signed_url",
            expires_at=float(expires),
        )
        request.signed_expires = expires
        return Admission(principal, signed_expires=expires, bound=bound)

    async def limit(self, request: Any, principal: Principal | None, *, stream_start: bool = False) -> None:
        """Charge *request* to its client address (and to *principal*'s ``sub``) or raise ``RATE_LIMITED``.

        :meth:`admit` calls this; routes that take no credential in the usual
        places (``/auth/refresh``) call it themselves.

        :param stream_start: draw from the stream-start policies, not the API ones.
        """
        if self._limiter is None:
            return
        decision: Decision = await self._limiter.check(self._keys(request, principal, stream_start))
        self._enforce(request, decision, stream_start)

    def _limit_now(self, request: Any, principal: Principal | None, stream_start: bool) -> None:
        """:meth:`limit` with a limiter that answers at once (or none)."""
        check_now = self._check_now
        if check_now is not None:
            self._enforce(request, check_now(self._keys(request, principal, stream_start)), stream_start)

    def _keys(
        self, request: Any, principal: Principal | None, stream_start: bool
    ) -> list[tuple[Policy, str]]:
        return self._keys_of(request.client_ip, principal, stream_start)

    def _keys_of(
        self, client_ip: str, principal: Principal | None, stream_start: bool
    ) -> list[tuple[Policy, str]]:
        sub = None
        if principal is not None and principal.via != "anonymous":
            sub = principal.sub if principal.via == "jwt" or principal.sub != "signed-url" else None
        return keys_for(client_ip=client_ip, sub=sub, stream=stream_start, policies=self._policies)

    @staticmethod
    def _enforce(request: Any, decision: Decision, stream_start: bool) -> None:
        """Set the ``RateLimit-*`` headers of *decision*; raise ``RATE_LIMITED`` if it refused."""
        set_header = request.setHeader
        set_header(b"RateLimit-Limit", b"%d" % decision.limit)
        set_header(b"RateLimit-Remaining", b"%d" % decision.remaining)
        set_header(b"RateLimit-Reset", b"%d" % decision.reset_s)
        if not decision.allowed:
            set_header(b"Retry-After", b"%d" % decision.retry_after_s)
            security_event(request, "rate_limited", stream=stream_start)
            raise ApiError(
                "RATE_LIMITED",
                refusal_message(decision),
                headers={"Retry-After": str(decision.retry_after_s)},
            )
