#!/bin/sh
# The system programs of the distributed tests (issue 27): PostgreSQL's initdb/pg_ctl (a throw-away server,
# tools/pg_server.py) and iproute2's `ip` (network namespaces, tools/netns_hosts.py). Installs Debian's packages
# only for what is missing, and fails with one line where it cannot (not root, no apt-get).
set -eu
missing=""
have_pg() {
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
    done
    return 1
}
have_pg || missing="$missing postgresql"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
if [ -z "$missing" ]; then
    echo "system-deps: PostgreSQL and iproute2 are installed"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the distributed tests need$missing; install it (as root on Debian: apt-get install -y$missing)" >&2
    exit 1
fi
echo "system-deps: installing$missing from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
have_pg || { echo "error: apt-get installed postgresql, but initdb/pg_ctl are still not found" >&2; exit 1; }
