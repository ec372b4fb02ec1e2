#!/usr/bin/env bash
# Peer comparison: builds a corpus, runs cairn, restic, borg and the
# physical limits (zstd, b3sum) on the same bytes in one run, prints a table.
# Usage: benches/peers/run.sh [--size-mb N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for t in restic borg zstd b3sum; do command -v $t >/dev/null || missing+=($t); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    pkgs=(); for t in "${missing[@]}"; do case $t in borg) pkgs+=(borgbackup);; *) pkgs+=($t);; esac; done
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
exec python3 benches/peers/peers.py "$@"
