#!/usr/bin/env bash
# System packages the tests need, from Debian's apt (idempotent: installs only what is missing):
# a real Prometheus server (the serving end-to-end test), a PostgreSQL server (the decision
# log's PostgreSQL backend), Chromium and its driver (the web console's browser test), and
# libgomp (numba's OpenMP threads for the vector env; without it numba uses its slower
# workqueue threads, with the same results). Not root: says what it could not install; the
# tests that need it then skip, saying why.
set -euo pipefail
need=""
command -v prometheus >/dev/null 2>&1 || need="$need prometheus"
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need="$need postgresql"
libs="$( { /sbin/ldconfig -p || ldconfig -p; } 2>/dev/null || true)"
case "$libs" in *libgomp.so.1*) ;; *) need="$need libgomp1" ;; esac
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "note: cannot install:$need (needs root and apt-get); the tests that need them will skip" >&2
  fi
fi
