"""``/stream`` throughput with authentication against without, on 256 KiB random ranges.

One streamsrv process (pinned to core 0) serves the same corpus three ways,
driven by wrk from core 1 with the same seeded request sequence:

* ``anonymous``: no credential (development profile, anonymous access on);
* ``jwt``: every request carries ``Authorization: Bearer`` with an HS256
  access token (verified once, then answered from the guard's token cache);
* ``signed``: every request is a signed URL (``expires``, ``kid``, ``sig``),
  verified on every request.

The three kinds are interleaved round by round, so drift on a noisy machine
hits them alike; the table gives the median requests/s of each and the
ratio to ``anonymous`` (the goal: under 10 % lower).

    .venv/bin/python bench/auth_stream.py [--concurrency 16,128] [--duration 8] [--repeat 3]

Needs wrk (Debian's package); binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import drivers
import servers
from corpus import make_corpus

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from streamsrv.auth.jwt import TokenIssuer  # noqa: E402
from streamsrv.auth.signing import SigningKey, signed_query  # noqa: E402

SECRET = "bench-only-hs256-secret-0123456789abcdef-0123456789"
URL_KEY = "bench-url-key-0123456789abcdef-0123456789abcdef"
SPAN = 256 * 1024
KINDS = ("anonymous", "jwt", "signed")


class _Now:
    def seconds(self) -> float:
        return time.time()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="16,128", help="comma-separated wrk connection counts")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--json", type=Path, help="write the raw runs here")
    args = p.parse_args(argv)
    if drivers.wrk_binary() is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    run_pin = ["taskset", "-c", "0"]
    load_pin = ["taskset", "-c", "1"]
    with tempfile.TemporaryDirectory(prefix="streamsrv-auth-bench-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = make_corpus(tmp / "media", seed=args.seed, tracks=20, long_count=0)
        expires = int(time.time()) + 24 * 3600
        key = SigningKey("bench", URL_KEY.encode())
        manifests = {
            "anonymous": corpus.write_manifest(tmp / "plain.txt", corpus.tracks),
            "jwt": corpus.write_manifest(tmp / "jwt.txt", corpus.tracks),
        }
        signed = tmp / "signed.txt"
        signed.write_text(
            "".join(
                f"{f.name} {f.size} {signed_query('/stream/' + f.name, expires, key)}\n"
                for f in corpus.tracks
            ),
            encoding="ascii",
        )
        manifests["signed"] = signed
        token = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=_Now()
        ).issue(sub="bench-user", roles=["listener"], ttl_s=24 * 3600)
        server = servers.streamsrv(
            tmp,
            REPO,
            corpus,
            servers.free_port(),
            {"STREAMSRV_JWT_SECRET": SECRET, "STREAMSRV_URL_SIGNING_KEYS": f"bench:{URL_KEY}"},
        )
        server.start(run_pin, corpus, timeout=30)
        runs: dict[str, dict[int, list[float]]] = {k: {c: [] for c in concurrencies} for k in KINDS}
        try:
            for round_ in range(args.repeat):
                for c in concurrencies:
                    for kind in KINDS:
                        result = drivers.http_load(
                            use_wrk=True,
                            pin=load_pin,
                            port=server.port,
                            manifest=manifests[kind],
                            prefix="/stream/",
                            mode="range",
                            concurrency=c,
                            duration=args.duration,
                            seed=args.seed + round_,
                            span=SPAN,
                            authorization=f"Bearer {token}" if kind == "jwt" else None,
                        )
                        errors = sum(result["errors"].values())
                        rate = result["requests"] / (result["duration_us"] / 1e6)
                        runs[kind][c].append(rate)
                        print(
                            f"round {round_ + 1} c={c:<4} {kind:<9} {rate:8.0f} req/s  errors {errors}",
                            flush=True,
                        )
                        if errors:
                            print(f"  (non-2xx or socket errors: {result['errors']})", flush=True)
        finally:
            server.stop()
    print()
    print(f"{'c':>5} {'anonymous':>10} {'jwt':>10} {'signed':>10} {'jwt/anon':>9} {'signed/anon':>12}")
    for c in concurrencies:
        med = {k: statistics.median(runs[k][c]) for k in KINDS}
        print(
            f"{c:>5} {med['anonymous']:>10.0f} {med['jwt']:>10.0f} {med['signed']:>10.0f} "
            f"{med['jwt'] / med['anonymous']:>9.2f} {med['signed'] / med['anonymous']:>12.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
