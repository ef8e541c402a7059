#!/usr/bin/env bash
# Installs headless Chromium (Debian/Ubuntu package `chromium`) for tests/test_report.py, which
# opens `curate report`'s report.html in a real browser. Does nothing when a Chromium is already on
# PATH (chromium, chromium-browser, google-chrome, or $CURATE_CHROMIUM). Needs root and apt-get.
#   scripts/install_chromium.sh          # CI: run once before pytest
set -euo pipefail

for b in "${CURATE_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
  if [ -n "$b" ] && command -v "$b" >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v "$b") ($("$b" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: apt-get not found; install Chromium with your system's package manager and put it on PATH" >&2
  echo "       (or set CURATE_CHROMIUM=/path/to/chrome; CURATE_SKIP_BROWSER=1 skips the browser test)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "error: installing chromium needs root: run 'sudo $0' (apt-get install -y chromium)" >&2
    echo "       or set CURATE_SKIP_BROWSER=1 to skip the browser test" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian ships `chromium`; Ubuntu's `chromium-browser` is a snap shim that does not work in containers.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed: $(command -v chromium) ($(chromium --version 2>/dev/null || echo 'version unknown'))"
