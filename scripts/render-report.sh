#!/usr/bin/env bash
# Renders an HTML compliance report (`panvault audit run --format html -o report.html`)
# with headless Chromium and writes a PNG screenshot, to check what a security lead
# will see when the file is forwarded and opened.
#
#   scripts/render-report.sh report.html [out.png] [width] [height]
#
# Needs Debian's chromium (`apt-get install -y chromium`). Chromium runs with no
# network access needed: the report is one self-contained file (inline CSS, no
# scripts, fonts or images), and the flags below keep Chromium from reaching out.
set -euo pipefail

html=${1:?usage: $0 REPORT.html [OUT.png] [WIDTH] [HEIGHT]}
out=${2:-${html%.html}.png}
width=${3:-1280}
height=${4:-2000}

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
  echo "render-report: chromium not found (apt-get install -y chromium)" >&2
  exit 2
fi

abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars \
  --window-size="$width,$height" --screenshot="$out" "file://$abs" >/dev/null 2>&1

if [ ! -s "$out" ]; then
  echo "render-report: no screenshot written" >&2
  exit 1
fi
echo "$out"
