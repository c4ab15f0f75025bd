#!/usr/bin/env bash
# System packages the test suite needs beyond Python, from Debian's archive:
#   chromium (the browser tests drive Debian's headless Chromium; test tools' own browser
#   downloads do not work here), redis-server (Celery's broker in the Redis tests) and
#   postgresql (the console's suites run a second time on a throwaway PostgreSQL cluster,
#   tests/support/postgres.py; the package's own "main" cluster is not created), and promtool
#   (Debian ships it in the prometheus package: tests/test_monitoring_docs.py checks the alert rules);
#   with BENCH=1, also wrk (the console load benchmark, docs/benchmarks.md).
# Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v flock >/dev/null 2>&1 || need+=(util-linux)  # flock(1): the shell takes the writers' lock too
# The server binaries live in /usr/lib/postgresql/<version>/bin, not on PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # only its promtool is used; no server is started
# BENCH=1: also wrk, the HTTP load generator of bench/console_load.py (make bench).
if [ -n "${BENCH:-}" ] && [ "${BENCH}" != 0 ]; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "error: missing system packages: ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "Installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [[ " ${need[*]} " == *" postgresql "* ]]; then
  # The tests start their own cluster in a temp folder: the package must not create (and start)
  # a "main" cluster of its own. postgresql-common reads this before the server package installs.
  $SUDO apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
  $SUDO sed -i 's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
fi
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
