#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 600) each, one after the
# other, with the stable toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz use the
# sanitizer flags). Crashes land in fuzz/artifacts/<target>/: copy them to
# formats/testdata/fuzz-regressions/<target>/ so a regular test replays them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
secs="${FUZZ_SECONDS:-600}"
targets="${*:-$(cargo fuzz list)}"
for t in $targets; do
    echo "== fuzz $t for ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
