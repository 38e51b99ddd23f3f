#!/usr/bin/env python3
"""Sign a streamsrv URL with the Python standard library only (3.8+).

    SIGNING_SECRET='example-url-signing-key-current-0123456789abcdef' \
    BASE_URL='https://media.example.com' \
    python3 sign_url.py 2025-06 '/stream/jazz/So What.flac' +3600 format=mp3 bitrate=320

Arguments: KID PATH EXPIRES [NAME=VALUE ...]
  KID       key id sent as `kid` ('' sends none: then only the server's current key verifies)
  PATH      the request path, decoded ('/stream/jazz/So What.mp3', not So%20What)
  EXPIRES   Unix seconds, or +SECONDS from now
  NAME=VALUE  parameters to bind (format, bitrate, uid, ip, download, ...), decoded
Environment: SIGNING_SECRET (as in STREAMSRV_URL_SIGNING_KEYS: the text, or base64:...),
             BASE_URL (optional; without it a relative URL is printed).
Prints the URL. The secret is read from the environment so that it never shows in `ps`.
See docs/api/authentication.md for the scheme and the test vectors.
"""

import base64
import hashlib
import hmac
import os
import sys
import time
from urllib.parse import quote

RESERVED = {"expires", "kid", "sig"}


def secret_bytes(secret):
    """The HMAC key: UTF-8 text, or `base64:` + standard or URL-safe base64 (padding optional)."""
    if secret.startswith("base64:"):
        data = secret[len("base64:"):].strip().replace("-", "+").replace("_", "/")
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    return secret.encode("utf-8")


def encode(text, safe=""):
    """Percent-encode UTF-8, leaving only A-Z a-z 0-9 - . _ ~ (and `safe`)."""
    return quote(text, safe=safe)


def sign_url(base_url, kid, secret, path, expires, bound):
    names = sorted(bound)  # code-point order == UTF-8 byte order
    message = f"{expires}\n{path}" + "".join(f"\n{n}={bound[n]}" for n in names)
    digest = hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    pairs = [(n, bound[n]) for n in names] + [("expires", str(expires))]
    if kid:
        pairs.append(("kid", kid))
    pairs.append(("sig", sig))
    query = "&".join(f"{encode(n)}={encode(v)}" for n, v in pairs)
    return f"{base_url.rstrip('/')}{encode(path, safe='/')}?{query}"


def main(argv):
    if len(argv) < 3 or "SIGNING_SECRET" not in os.environ:
        sys.exit("usage: SIGNING_SECRET=... [BASE_URL=...] sign_url.py KID PATH EXPIRES [NAME=VALUE ...]")
    kid, path, expires_arg, *items = argv
    expires = int(time.time()) + int(expires_arg[1:]) if expires_arg.startswith("+") else int(expires_arg)
    bound = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or name in RESERVED or name in bound:
            sys.exit(f"bad or repeated parameter: {item!r}")
        bound[name] = value
    if not path.startswith("/") or any("\n" in s for s in [path, *bound, *bound.values()]):
        sys.exit("PATH must start with / and nothing may contain a line feed")
    secret = secret_bytes(os.environ["SIGNING_SECRET"])
    print(sign_url(os.environ.get("BASE_URL", ""), kid, secret, path, expires, bound))


if __name__ == "__main__":
    main(sys.argv[1:])
