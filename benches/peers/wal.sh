#!/usr/bin/env bash
# WAL archiving benchmark: cairn `wal push`/`wal fetch` against pgBackRest
# `archive-push`/`archive-get`, one process per 16 MiB segment of real WAL
# from a throwaway PostgreSQL 15 cluster running pgbench; prints a table and
# writes .work/bench/wal-results.json. Runs as root (PostgreSQL and pgBackRest
# are switched to the user cairntest, created here if missing).
# Usage: benches/peers/wal.sh [--segments N] [--tools cairn,pgbackrest] [--scale S] [--async-push N]
#        [--async-fetch N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "wal.sh: run as root (the cluster runs as cairntest via runuser)" >&2; exit 1; }
pkgs=()
command -v pgbackrest >/dev/null || pkgs+=(pgbackrest)
[ -x /usr/lib/postgresql/15/bin/postgres ] || pkgs+=(postgresql-15)
if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
id -u cairntest >/dev/null 2>&1 || useradd --system --no-create-home cairntest
exec python3 benches/peers/wal.py "$@"
