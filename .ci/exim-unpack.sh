#!/usr/bin/env bash
# Unpacks Debian's Exim 4 (the rate-limit oracle of tests/policy/ratelimit_exim_test.ts) without installing
# the package, which conflicts with postfix: apt-get download + dpkg -x into $1 (default
# /var/tmp/ferry-exim). Installs the libraries the setuid binary needs (LD_LIBRARY_PATH does not survive
# its re-exec) and creates the Debian-exim user it runs as. Idempotent; prints the exim binary's path.
set -euo pipefail
DEST="${1:-/var/tmp/ferry-exim}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if [ ! -x "$DEST/usr/sbin/exim4" ]; then
  work="$(mktemp -d)"
  # apt-get download needs package lists: update once if they are missing or stale.
  (cd "$work" && apt-get download -qq exim4-daemon-heavy exim4-base exim4-config >/dev/null 2>&1) ||
    { $SUDO apt-get update -qq && (cd "$work" && apt-get download -qq exim4-daemon-heavy exim4-base exim4-config >/dev/null); }
  mkdir -p "$DEST"
  for deb in "$work"/*.deb; do $SUDO dpkg -x "$deb" "$DEST"; done
  rm -rf "$work"
fi
missing=""
for p in libmariadb3 libidn12 libspf2-2; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then $SUDO apt-get install -y -qq $missing >/dev/null; fi
id Debian-exim >/dev/null 2>&1 || $SUDO useradd --system --user-group --no-create-home Debian-exim
echo "$DEST/usr/sbin/exim4"
