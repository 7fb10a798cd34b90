# Strata — the two commands a fresh clone needs:
#   make demo   run the demo (see README.md)
#   make test   run every test (CI runs this through .ci/run)

export CARGO_TARGET_DIR ?= $(HOME)/.cache/strata-target

.PHONY: test lint unit fuzz-smoke demo deps bench-translate

test: lint unit

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo nextest run --workspace --no-fail-fast

# Short runs of every fuzz target (needs cargo-fuzz; .ci/run installs it).
fuzz-smoke:
	bash .ci/fuzz-smoke

demo:
	bash dataplane/demo.sh

bench-translate:
	cargo bench -p strata-otel-prom --bench translate
