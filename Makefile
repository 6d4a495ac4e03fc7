# Thin shortcuts: each target runs the one real command shown, nothing more.
COMPOSE := docker compose -f deploy/docker-compose.yml
# make bench BENCH=query (or "ingest --quick")
BENCH ?= ingest

.PHONY: build test stack-up stack-down run bench compose-up compose-down fmt lint docs check-deploy

build:
	cargo build --workspace

test:
	scripts/test.sh

stack-up:
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

run:
	cargo run -- run

bench:
	scripts/bench.sh $(BENCH)

compose-up:
	$(COMPOSE) up -d

compose-down:
	$(COMPOSE) down

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

docs:
	cargo doc --workspace --no-deps

check-deploy:
	scripts/check-deploy.sh
