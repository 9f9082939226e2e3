#!/usr/bin/env bash
# Open a report in headless Chromium and save a screenshot, to see what a person sees.
# Usage: scripts/report_screenshot.sh REPORT_HTML [OUT_PNG] [HEIGHT_PX]  (width 1000 px)
# Needs Debian's chromium (apt-get install chromium; .ci/run installs it where it can).
set -euo pipefail
page="$(realpath "$1")"
out="${2:-${page%.html}.png}"
height="${3:-2600}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
    echo "report_screenshot: chromium is not installed (apt-get install chromium)" >&2
    exit 2
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1000,"$height" \
    --screenshot="$out" "file://$page" >/dev/null 2>&1
test -s "$out"
echo "screenshot: $out"
