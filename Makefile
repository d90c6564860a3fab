# llmpulse developer entry points. On a fresh machine `make demo` and
# `make test` each do their own set-up: system packages, virtualenv, services.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LLMPULSE_KAFKA_PORT ?= 19092
LLMPULSE_PG_PORT ?= 15432
export LLMPULSE_KAFKA_PORT LLMPULSE_PG_PORT
# Point everything at the local services unless the caller named others.
ifeq ($(origin KAFKA_BOOTSTRAP_SERVERS),undefined)
  export KAFKA_BOOTSTRAP_SERVERS := 127.0.0.1:$(LLMPULSE_KAFKA_PORT)
  START_KAFKA := 1
endif
ifeq ($(origin DATABASE_URL),undefined)
  export DATABASE_URL := postgresql://llmpulse@127.0.0.1:$(LLMPULSE_PG_PORT)/llmpulse
  START_PG := 1
endif

.PHONY: help setup system-deps venv services services-stop services-status test unit integration demo bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

setup: system-deps venv  ## Install system packages and the virtualenv

system-deps:  ## Debian packages: java, maven, postgresql, kcat, prometheus (only the missing ones)
	@deploy/local/install-system-deps.sh

venv: $(VENV)/.installed  ## Virtualenv with llmpulse and its dev dependencies

$(VENV)/.installed: pyproject.toml Makefile schemas/_hot_readers.pyx sinks/_inbox_copy.pyx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# GrowthBook's stats engine, only to cross-check ours in tests. It pins
	# numpy<2 and pandas<2 but runs on current ones, so its pins are skipped.
	$(BIN)/pip install -q --no-deps 'gbstats==0.8.0'
	@touch $@

services: system-deps  ## Start Kafka and PostgreSQL on 127.0.0.1 (idempotent)
ifeq ($(START_KAFKA)$(START_PG),11)
	@deploy/local/services.sh start
else
	@echo "services: using KAFKA_BOOTSTRAP_SERVERS=$(KAFKA_BOOTSTRAP_SERVERS) and the given DATABASE_URL"
endif

services-stop:  ## Stop the local Kafka and PostgreSQL
	@deploy/local/services.sh stop

services-status:
	@deploy/local/services.sh status

test: setup services  ## The whole suite: unit + integration on real services
	$(BIN)/pytest

unit: venv  ## Unit tests and doctests only (no services)
	$(BIN)/pytest -m "not integration"

integration: setup services
	$(BIN)/pytest -m integration

demo: setup services  ## The pipeline on live services with synthetic traffic
	$(BIN)/llmpulse demo

bench: setup services  ## Benchmarks; results in docs/benchmarks/
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
