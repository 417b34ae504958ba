#!/usr/bin/env bash
# The browser test drives Debian's Chromium through Playwright (Playwright never downloads a
# browser here). `make test` and CI both call this: it finds Chromium, installs it where it
# can (root with apt), or stops with one line saying how to get it.
set -uo pipefail
for exe in chromium chromium-browser; do
  command -v "$exe" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test (apt-get)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1
  command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "error: the browser test needs Chromium: install it (Debian/Ubuntu: 'sudo apt-get install chromium'), or run 'make test-no-browser' to skip that one test knowingly" >&2
exit 1
