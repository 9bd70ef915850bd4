#!/usr/bin/env bash
# Type-check and lint rlm as it is installed (rlm/, with sandbox/ as rlm.sandbox, agents/ as rlm.agents...):
# mypy with [tool.mypy] of pyproject.toml (strict on the core and the sandbox), then ruff with [tool.ruff] on
# everything. Both run; the exit status is non-zero when either finds a problem. tests/test_typecheck.py runs
# this script, so the README's test command covers it.
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
status=0
# The cache lives beside the tree (which is rebuilt every time), so a second run checks only what changed.
(cd "$farm" && "../../$VPY" -m mypy --config-file ../../pyproject.toml --cache-dir ../mypy-cache -p rlm) || status=1
"$VPY" -m ruff check --output-format concise rlm sandbox agents tui benchmarks tests || status=1
exit "$status"
