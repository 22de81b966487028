#!/usr/bin/env bash
# Run the test suite (pytest) in ./.venv, creating it first if needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/.ci/setup"
cd "$root"
exec .venv/bin/python -m pytest -q "$@"
