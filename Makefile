# The two commands the README opens with, plus the checks CI runs.
.PHONY: up test check bootstrap

bootstrap:
	@scripts/bootstrap

up: bootstrap  ## the whole system locally on embedded stores (Ctrl-C stops it)
	.venv/bin/dmb up

test: bootstrap  ## unit + integration tests against real Postgres, Redis, broker and Ray
	.venv/bin/pytest

check: bootstrap  ## lint, format, types, import layers, generated-code staleness
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/dmb codegen --check
