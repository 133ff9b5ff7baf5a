# The README's two commands: `make demo` and `make test`.
CARGO ?= cargo

.PHONY: deps demo test lint unit bench fuzz fuzz-smoke
deps:
	./scripts/deps.sh

# Installs what is missing, builds, and runs the loopback demo.
demo: deps
	$(CARGO) build --release -p ccbt
	./target/release/ccbt demo

# The whole suite: unit, end-to-end and interop tests, then format and lint checks. Everything is
# built first (that may fetch crates); the tests then run offline in a network namespace with only
# loopback (scripts/netns.sh), so no test can reach another machine.
test: deps
	$(CARGO) build -p ccbt
	$(CARGO) test --workspace --no-run
	./scripts/netns.sh $(CARGO) test --workspace --offline
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	./scripts/fuzz.sh $(FUZZ_SMOKE_SECS)

# Every fuzz target for FUZZ_SECS seconds (make fuzz FUZZ_SECS=600).
FUZZ_SECS ?= 600
FUZZ_SMOKE_SECS ?= 15
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECS)

# Fast unit tests only.
unit:
	$(CARGO) test --workspace --lib --bins

bench: deps
	$(CARGO) bench -p ccbt-benches
