#!/usr/bin/env bash
# The main job on a local repository: back up real data twice (the second
# run deduplicates), list snapshots, restore, and verify the bytes with
# cmp and b3sum.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/cairn
W=.work/demo
rm -rf "$W" && mkdir -p "$W"
export CAIRN_REPO="$PWD/$W/repo" CAIRN_KEY_FILE="$PWD/$W/repo.key" CAIRN_CACHE_DIR="$PWD/$W/cache"

echo "== building a sample: a tar of /usr/share/doc and /usr/bin"
tar -cf "$W/sample.tar" /usr/share/doc /usr/bin 2>/dev/null || true
ls -l "$W/sample.tar"

echo "== cairn init (creates a 0600 key file)"
$BIN init
echo "== cairn backup (first run)"
$BIN backup --source sample --tag demo "$W/sample.tar"
echo "== cairn backup (same data again: nothing new is uploaded)"
$BIN backup --source sample "$W/sample.tar"
echo "== cairn backup from a producer command"
$BIN backup --source etc -- tar -cf - -C / etc/os-release etc/hostname
echo "== cairn snapshots"
$BIN snapshots
echo "== cairn restore latest --source sample"
$BIN restore latest --source sample --to "$W/restored.tar"
cmp "$W/sample.tar" "$W/restored.tar"
b3sum "$W/sample.tar" "$W/restored.tar"
echo "== cairn check --read-data"
$BIN check --read-data
echo "== cairn stats"
$BIN stats
echo "demo ok: restored bytes are identical"
