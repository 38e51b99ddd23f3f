#!/usr/bin/env node
// Sign a streamsrv URL with Node's built-in node:crypto only (Node 16+).
//
//   SIGNING_SECRET='example-url-signing-key-current-0123456789abcdef' \
//   BASE_URL='https://media.example.com' \
//   node sign_url.mjs 2025-06 '/stream/jazz/So What.flac' +3600 format=mp3 bitrate=320
//
// Arguments: KID PATH EXPIRES [NAME=VALUE ...]
//   KID         key id sent as `kid` ('' sends none: then only the server's current key verifies)
//   PATH        the request path, decoded ('/stream/jazz/So What.mp3', not So%20What)
//   EXPIRES     Unix seconds, or +SECONDS from now
//   NAME=VALUE  parameters to bind (format, bitrate, uid, ip, download, ...), decoded
// Environment: SIGNING_SECRET (as in STREAMSRV_URL_SIGNING_KEYS: the text, or base64:...),
//              BASE_URL (optional; without it a relative URL is printed).
// Prints the URL. See docs/api/authentication.md for the scheme and the test vectors.
//
// Two traps this file avoids: encodeURIComponent leaves ! ' ( ) * unencoded (streamsrv's
// signers encode everything but A-Z a-z 0-9 - . _ ~), and Array.prototype.sort() compares
// UTF-16 code units, which is not UTF-8 byte order for characters beyond U+FFFF.

import { createHmac } from "node:crypto";

const RESERVED = new Set(["expires", "kid", "sig"]);

function secretBytes(secret) {
  if (secret.startsWith("base64:")) {
    // Standard or URL-safe alphabet, padding optional.
    const data = secret.slice("base64:".length).trim().replace(/-/g, "+").replace(/_/g, "/");
    return Buffer.from(data, "base64");
  }
  return Buffer.from(secret, "utf8");
}

function encode(text, keepSlash = false) {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function signUrl(baseUrl, kid, secret, path, expires, bound) {
  const names = Object.keys(bound).sort((a, b) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
  const message = `${expires}\n${path}` + names.map((n) => `\n${n}=${bound[n]}`).join("");
  const sig = createHmac("sha256", secret).update(message, "utf8").digest("base64url");
  const pairs = names.map((n) => [n, bound[n]]);
  pairs.push(["expires", String(expires)]);
  if (kid) pairs.push(["kid", kid]);
  pairs.push(["sig", sig]);
  const query = pairs.map(([n, v]) => `${encode(n)}=${encode(v)}`).join("&");
  return `${baseUrl.replace(/\/+$/, "")}${encode(path, true)}?${query}`;
}

function fail(message) {
  process.stderr.write(message + "\n");
  process.exit(1);
}

const [kid, path, expiresArg, ...items] = process.argv.slice(2);
if (expiresArg === undefined || process.env.SIGNING_SECRET === undefined) {
  fail("usage: SIGNING_SECRET=... [BASE_URL=...] node sign_url.mjs KID PATH EXPIRES [NAME=VALUE ...]");
}
if (!/^\+?[0-9]+$/.test(expiresArg)) fail(`EXPIRES must be Unix seconds or +SECONDS, got ${expiresArg}`);
const expires = expiresArg.startsWith("+")
  ? Math.floor(Date.now() / 1000) + Number(expiresArg.slice(1))
  : Number(expiresArg);
const bound = Object.create(null);
for (const item of items) {
  const at = item.indexOf("=");
  const name = at < 0 ? "" : item.slice(0, at);
  if (at < 0 || RESERVED.has(name) || name in bound) fail(`bad or repeated parameter: ${item}`);
  bound[name] = item.slice(at + 1);
}
if (!path.startsWith("/") || [path, ...Object.keys(bound), ...Object.values(bound)].some((s) => s.includes("\n"))) {
  fail("PATH must start with / and nothing may contain a line feed");
}
const secret = secretBytes(process.env.SIGNING_SECRET);
console.log(signUrl(process.env.BASE_URL ?? "", kid, secret, path, expires, bound));
