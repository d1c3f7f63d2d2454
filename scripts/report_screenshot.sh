#!/usr/bin/env bash
# Run the demo plan on a scratch clone of this repository, integrate it, write
# the HTML report, and take a screenshot of it with headless Chromium.
#   scripts/report_screenshot.sh [OUT.png]     (default: docs/report.png)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/docs/report.png}
mpw=${MPW:-$root/target/debug/mpw}
[ -x "$mpw" ] || (cd "$root" && cargo build --quiet)
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "no chromium on this machine (Debian: apt-get install chromium)" >&2
  exit 3
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/repo"
cd "$work/repo"
git config user.name "mpw demo"
git config user.email "demo@mpw.invalid"
"$mpw" -q run plans/demo.jsonc >/dev/null
"$mpw" -q integrate >/dev/null
"$mpw" report --html "$work/report.html" >/dev/null
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --window-size=1280,1100 --user-data-dir="$work/profile" \
  --screenshot="$out" "file://$work/report.html" 2>/dev/null
echo "$out"
