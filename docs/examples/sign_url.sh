#!/usr/bin/env bash
# Sign a streamsrv URL with bash (3.2+), openssl, od, tr and sort, then fetch it with curl:
#
#   export SIGNING_SECRET='example-url-signing-key-current-0123456789abcdef'
#   url=$(BASE_URL=https://media.example.com ./sign_url.sh 2025-06 '/stream/jazz/So What.flac' +3600 format=mp3 bitrate=320)
#   curl -fsS -o so-what.mp3 "$url"
#
# Arguments: KID PATH EXPIRES [NAME=VALUE ...]
#   KID         key id sent as `kid` ('' sends none: then only the server's current key verifies)
#   PATH        the request path, decoded ('/stream/jazz/So What.mp3', not So%20What)
#   EXPIRES     Unix seconds, or +SECONDS from now
#   NAME=VALUE  parameters to bind (format, bitrate, uid, ip, download, ...), decoded
# Environment: SIGNING_SECRET (as in STREAMSRV_URL_SIGNING_KEYS: the text, or base64:...),
#              BASE_URL (optional; without it a relative URL is printed).
# Prints the URL. See docs/api/authentication.md for the scheme and the test vectors.
#
# Note: openssl receives the key on its command line (-hmac / -macopt), where other
# users of this machine can see it in `ps`; sign on a machine you trust, or use the
# Python, Node or Go example.
set -euo pipefail
export LC_ALL=C   # bytes, not characters: for the percent-encoding and for sort

die() { printf '%s\n' "$*" >&2; exit 1; }

# Percent-encode every byte but A-Z a-z 0-9 - . _ ~ (and / when $2 is "path").
encode() {
  local s=$1 keep=${2:-} out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      /) if [[ $keep == path ]]; then out+=/; else out+=%2F; fi ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

[[ $# -ge 3 && -n ${SIGNING_SECRET+x} ]] ||
  die "usage: SIGNING_SECRET=... [BASE_URL=...] $0 KID PATH EXPIRES [NAME=VALUE ...]"
kid=$1 path=$2 expires=$3
shift 3
[[ $expires =~ ^\+?[0-9]+$ ]] || die "EXPIRES must be Unix seconds or +SECONDS, got $expires"
if [[ $expires == +* ]]; then expires=$(( $(date +%s) + ${expires#+} )); fi
[[ $path == /* && $path != *$'\n'* ]] || die "PATH must start with / and contain no line feed"

# Bound parameters, one NAME=VALUE per line, sorted by NAME alone (C locale: UTF-8 byte order).
seen=$'\n'
for item in "$@"; do
  name=${item%%=*}
  [[ $item == *=* && $item != *$'\n'* && $seen != *$'\n'"$name"$'\n'* ]] || die "bad or repeated parameter: $item"
  case $name in expires | kid | sig) die "$name cannot be bound" ;; esac
  seen+="$name"$'\n'
done
sorted=''
if (($# > 0)); then sorted=$(printf '%s\n' "$@" | sort -t '=' -k 1,1); fi

message=$(printf '%s\n%s' "$expires" "$path"; [[ -z $sorted ]] || printf '\n%s' "$sorted")

if [[ $SIGNING_SECRET == base64:* ]]; then
  # Binary key: standard or URL-safe base64, padding optional; openssl takes it as hex.
  b64=$(printf '%s' "${SIGNING_SECRET#base64:}" | tr -d ' \n' | tr '_-' '/+' | tr -d '=')
  while (( ${#b64} % 4 )); do b64+='='; done
  hexkey=$(printf '%s' "$b64" | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \n')
  mac=(-mac HMAC -macopt "hexkey:$hexkey")
else
  mac=(-hmac "$SIGNING_SECRET")
fi
sig=$(printf '%s' "$message" | openssl dgst -sha256 "${mac[@]}" -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=\n')

query=''
while IFS= read -r item; do
  [[ -n $item ]] || continue
  query+="$(encode "${item%%=*}")=$(encode "${item#*=}")&"
done <<< "$sorted"
query+="expires=$expires"
[[ -z $kid ]] || query+="&kid=$(encode "$kid")"
query+="&sig=$sig"

base=${BASE_URL:-}
printf '%s%s?%s\n' "${base%/}" "$(encode "$path" path)" "$query"
