#!/usr/bin/env bash
# The browser tests drive Debian's chromium through Playwright (which cannot download its own
# browser on machines without internet). Install it when we can; the tests decide what a missing
# browser means (a failure under CI=true, a skip on a developer's machine).
set -euo pipefail
BROWSER=${TRANSFER_LAB_BROWSER:-/usr/bin/chromium}
[ -x "$BROWSER" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium for the browser tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
else
  echo "warning: $BROWSER is missing and cannot be installed here (needs root and apt-get);" \
       "browser tests will be skipped (or fail under CI=true)." >&2
fi
