#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/test_demo_browser.py); does nothing when it is there.
# Needs root (CI and the dev machines run as root) or passwordless sudo. Exit code non-zero: not installed.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install_chromium.sh: $CHROMIUM is missing and this user cannot apt-get install (not root, no sudo)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
[ -x "$CHROMIUM" ] || { echo "install_chromium.sh: apt-get ran but $CHROMIUM is still missing" >&2; exit 1; }
