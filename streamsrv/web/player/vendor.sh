#!/usr/bin/env bash
# Fetch the demo player's browser libraries from npm, pinned, into static/vendor/.
#
# The player has no build step: it loads these built files as they are
# published (dist/), each with its licence beside it (renamed .txt so the
# daemon serves them).  Run from anywhere, with npm on PATH; then review
# `git diff --stat` and commit static/vendor/.  VERSIONS.txt records what was
# fetched and each file's SHA-256.
#
# peaks.min.js is peaks.js's UMD bundle, which carries its dependencies
# konva, waveform-data and eventemitter3 inside: their licences are kept too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

HLS=hls.js@1.7.4
PEAKS=peaks.js@4.0.0
KONVA=konva@9.3.22
WAVEFORM=waveform-data@4.5.2
EVENTS=eventemitter3@5.0.4

cd "$work"
for pkg in "$HLS" "$PEAKS" "$KONVA" "$WAVEFORM" "$EVENTS"; do
  name=${pkg%@*}
  mkdir -p "$name"
  tarball=$(npm pack --silent "$pkg")
  tar -xzf "$tarball" -C "$name" --strip-components=1
done

rm -rf "$out"
mkdir -p "$out"
cp hls.js/dist/hls.min.mjs "$out/hls.min.mjs"
cp hls.js/LICENSE "$out/hls.js-LICENSE.txt"
cp peaks.js/dist/peaks.min.js "$out/peaks.min.js"
cp peaks.js/COPYING "$out/peaks.js-LICENSE.txt"
cp konva/LICENSE "$out/konva-LICENSE.txt"
cp waveform-data/LICENSE "$out/waveform-data-LICENSE.txt"
cp eventemitter3/LICENSE "$out/eventemitter3-LICENSE.txt"
# The source maps' references would only make the browser ask for files not shipped.
sed -i -e '/^\/\/# sourceMappingURL=/d' "$out/hls.min.mjs" "$out/peaks.min.js"

{
  echo "Vendored by streamsrv/web/player/vendor.sh from the npm registry:"
  echo "  $HLS $PEAKS (bundling $KONVA $WAVEFORM $EVENTS)"
  echo
  (cd "$out" && sha256sum -- *.mjs *.js *-LICENSE.txt)
} > "$out/VERSIONS.txt"
echo "vendored into $out"
