#!/usr/bin/env bash
# What `make test` needs beyond the project itself, installed before pytest so that a newcomer's
# `make test` on a fresh clone is the same as CI's:
#   - the `test` extra (hadolint for the Dockerfile lint test, jsonschema for the deploy/ schemas, moto's S3
#     server and s3fs for tests/test_remote_outputs.py) into $VENV;
#   - megatron-core and mosaicml-streaming (--no-deps), the real trainer-side readers;
#   - headless Chromium for tests/test_report.py (scripts/install_chromium.sh: apt-get, as root or
#     with password-less sudo).
# What cannot be installed here (no root, no apt-get) is skipped LOUDLY: one line on stderr now,
# and the reason written to $VENV/test-skips.txt, which the affected test reads to skip with that
# reason instead of failing. Nothing else is ever skipped silently.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
[ "$VENV" = "system" ] && PY=python3
SKIPS="$($PY -c 'import sys; print(sys.prefix)')/test-skips.txt"
rm -f "$SKIPS"

if ! [ -x "$(dirname "$(command -v "$PY" || echo "$PY")")/hadolint" ] || ! $PY -c "import jsonschema, moto.server, s3fs" 2>/dev/null; then
  $PY -m pip install -q -e ".[test]" || { echo "make test: error: could not install the test extra (pip install -e '.[test]')" >&2; exit 1; }
fi

# The trainers' own readers, which tests/test_formats_*.py (and the remix stage's tests) check our
# writers against: megatron-core's IndexedDataset, mosaicml-streaming's MDSWriter/StreamingDataset.
# --no-deps is essential: with their dependencies pip replaces the CPU torch with a CUDA build (and
# downgrades transformers). Beyond the project's own dependencies they import exactly these (checked
# by importing both readers; see OFFLINE.md, "Trainer-side readers"). pip skips what is installed.
TRAINER_LIBS=("megatron-core==0.16.1" "mosaicml-streaming==0.13.0" catalogue zstd python-snappy cramjam brotli)
$PY -m pip install -q --no-deps "${TRAINER_LIBS[@]}" || { echo "make test: error: could not install the trainer-side readers (pip install --no-deps ${TRAINER_LIBS[*]})" >&2; exit 1; }

if [ "${CURATE_SKIP_BROWSER:-}" = "1" ]; then
  echo "browser: CURATE_SKIP_BROWSER=1 was set" >> "$SKIPS"
elif ! out=$(bash scripts/install_chromium.sh 2>&1); then
  reason=$(printf '%s\n' "$out" | grep -m1 '^error:' | sed 's/^error: //')
  echo "browser: Chromium could not be installed (${reason:-install_chromium.sh failed}); the report's browser test is skipped" >> "$SKIPS"
  echo "make test: WARNING: Chromium could not be installed (${reason:-see scripts/install_chromium.sh}); tests/test_report.py's browser test will be SKIPPED" >&2
else
  printf '%s\n' "$out" | tail -1
fi
exit 0
