"""Authentication and authorisation: JWTs, JWKS, roles and permissions, the principal.

Each credential ends as a :class:`~streamsrv.auth.principal.Principal` or an
:class:`~streamsrv.auth.principal.AuthError`; routes ask the principal
(``principal.can("stream:hq")``).  Nothing in this package logs, stores or
echoes a credential: errors carry a contract code and a machine reason only.
"""

from streamsrv.auth.principal import ANONYMOUS, AuthError, Principal, anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES, effective_permissions, load_roles

__all__ = [
    "ANONYMOUS",
    "DEFAULT_ROLES",
    "AuthError",
    "Principal",
    "anonymous_principal",
    "effective_permissions",
    "load_roles",
]
