# cairn — see README.md. Everything builds with the release profile so that
# RocksDB's C++ compiles once per target directory.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo test fmt clippy unit e2e bench bench-peers stress stress-unfenced fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release -p cairn-cli

demo: build
	@scripts/demo.sh

fmt:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The whole suite: formatting, lints, unit, property, oracle and end-to-end tests.
test: deps fmt clippy build
	$(CARGO) test --release --workspace

bench: deps
	$(CARGO) bench -p cairn-benches

bench-peers: build
	@benches/peers/run.sh

stress: build
	CAIRN_STRESS_SECS=$${CAIRN_STRESS_SECS:-1800} cargo test --release -p cairn-tests --test e2e gc_stress::stress_local_repository -- --nocapture

stress-unfenced: build
	CAIRN_STRESS_SECS=$${CAIRN_STRESS_SECS:-300} cargo test --release -p cairn-tests --test e2e gc_stress::stress_without_fencing_loses_data -- --ignored --nocapture

fuzz:
	@fuzz/run.sh

clean:
	rm -rf .work
