#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv at <repo>/.venv used by tests/python.
# Idempotent: the install step is skipped when .venv/.requirements.sha256 matches the
# hash of tests/python/requirements.txt. Usage: bash scripts/venv.sh  (prints the venv's python)
# VENV and REQUIREMENTS choose another venv and requirements file (scripts/schemathesis uses them
# so the fuzzer's dependencies stay out of the main suite's install).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
req="${REQUIREMENTS:-$repo/tests/python/requirements.txt}"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

want="$( { "$python" --version 2>&1; cat "$req"; } | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian/Ubuntu split venv/ensurepip into python3-venv.
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
      ver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      apt-get update -qq >&2 || true
      apt-get install -y -qq "python${ver}-venv" >&2 || apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
fi

pip_flags=(--disable-pip-version-check --no-input --retries 5 --timeout 60 -q)
"$venv/bin/python" -m pip install "${pip_flags[@]}" --upgrade pip >&2 || true
"$venv/bin/python" -m pip install "${pip_flags[@]}" -r "$req" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
