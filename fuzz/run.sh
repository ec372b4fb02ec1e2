#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 600) each, one after the
# other, with the stable toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz use the
# sanitizer flags), optimised and with overflow checks and debug assertions
# (-O -a; override with FUZZ_BUILD_FLAGS). Targets that decode engine
# structures start from the seeds in engine/testdata/fuzz-seeds/<target>/.
#
# Crashes land in fuzz/artifacts/<target>/: copy them to
# formats/testdata/fuzz-regressions/<target>/ (cairn-formats targets) or
# engine/testdata/fuzz-regressions/<target>/ (cairn-engine targets, see
# engine/src/fuzzing.rs) so a regular test replays them. dicts/ holds
# libFuzzer dictionaries (JSON tokens and boundary integers, Redis replies).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
secs="${FUZZ_SECONDS:-600}"
# shellcheck disable=SC2206
flags=(${FUZZ_BUILD_FLAGS:--O -a})
targets="${*:-$(cargo fuzz list)}"
for t in $targets; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "corpus/$t"
    seeds=()
    [ -d "../engine/testdata/fuzz-seeds/$t" ] && seeds=("../engine/testdata/fuzz-seeds/$t")
    dict=()
    case "$t" in
        snapshot_manifest | member_index | wal_manifest | keys_config) dict=(-dict=dicts/json.dict) ;;
        redis_sync) dict=(-dict=dicts/redis.dict) ;;
    esac
    RUSTC_BOOTSTRAP=1 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 "${dict[@]}"
done
