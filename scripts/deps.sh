#!/usr/bin/env bash
# Installs what cairn's build, tests and demo need on a Debian machine, and
# only what is missing: clang/libclang (RocksDB's bindings), PostgreSQL 15,
# redis-server, zstd, b3sum, GNU time, openssl (test certificates for the
# Redis TLS test), promtool (the metrics files' oracle), systemd-analyze
# (the deployment units' oracle), Ceph's mon, OSD and radosgw (an S3 server whose
# conditional writes are atomic, started by scripts/ceph.sh), and moto (a
# quick S3 emulator) in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang || need+=(clang)
[ -n "$(ls /usr/lib/llvm-*/lib/libclang*.so* 2>/dev/null | head -1)" ] || need+=(libclang-dev)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
have redis-server || need+=(redis-server)
have redis-check-rdb || need+=(redis-tools)
have zstd || need+=(zstd)
have openssl || need+=(openssl)
have b3sum || need+=(b3sum)
[ -x /usr/bin/time ] || need+=(time)
have tar || need+=(tar)
have openssl || need+=(openssl)
have ceph-mon || need+=(ceph-mon)
have ceph-osd || need+=(ceph-osd)
have radosgw || need+=(radosgw)
have uuidgen || need+=(uuid-runtime)
have curl || need+=(curl)
have promtool || need+=(prometheus)
have systemd-analyze || need+=(systemd)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)

if [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/moto_server ]; then
    echo "deps: installing moto[server] into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check 'moto[server]>=5,<6'
fi
