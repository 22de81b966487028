#!/usr/bin/env bash
# Main job: the demo on the shipped sample data and model. Writes out/demo/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/.ci/setup"
cd "$root"
exec .venv/bin/python examples/demo.py --out "${1:-out/demo}"
