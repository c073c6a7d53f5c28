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
# Every library exim4-daemon-heavy and exim4-base depend on (Debian 12), not only those a developer machine
# happened to lack: a fresh machine has neither libpq5 nor libgnutls-dane0, and exim4 then exits 127.
missing=""
for p in libc6 libcrypt1 libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libldap-2.5-0 libmariadb3 \
  libnsl2 libpam0g libpcre2-8-0 libperl5.36 libpq5 libsasl2-2 libspf2-2 libsqlite3-0; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get install -y -qq $missing >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null; }
fi
# Fail here, naming the library, rather than in the middle of a test with exit code 127.
if ldd "$DEST/usr/sbin/exim4" | grep -q "not found"; then
  echo "exim-unpack.sh: exim4 still lacks: $(ldd "$DEST/usr/sbin/exim4" | grep "not found" | tr -s ' \t' ' ')" >&2
  exit 1
fi
id Debian-exim >/dev/null 2>&1 || $SUDO useradd --system --user-group --no-create-home Debian-exim
echo "$DEST/usr/sbin/exim4"
