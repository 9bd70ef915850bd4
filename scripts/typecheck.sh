#!/usr/bin/env bash
# Type-check and lint rlm as it is installed (rlm/, with sandbox/ as rlm.sandbox, agents/ as rlm.agents...):
# mypy --strict on the core (rlm/) and the sandbox, ruff on everything. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=.venv/bin/python
# pyproject maps top-level folders into the rlm namespace (package-dir); mypy cannot follow that mapping,
# so it checks a tree of symlinks laid out as the installed package is.
farm=build/typecheck
rm -rf "$farm"
mkdir -p "$farm/rlm"
for entry in rlm/*; do
  ln -s "../../../$entry" "$farm/rlm/$(basename "$entry")"
done
for mapped in sandbox agents tui benchmarks; do
  ln -s "../../../$mapped" "$farm/rlm/$mapped"
done
(cd "$farm" && "../../$VPY" -m mypy --config-file ../../pyproject.toml -p rlm)
"$VPY" -m ruff check rlm sandbox agents tui benchmarks tests
