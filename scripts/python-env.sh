#!/usr/bin/env bash
# Creates (or reuses) the virtualenv with the pinned Python reference tools and prints its path.
# The venv is rebuilt when scripts/requirements.txt changes. Fails loudly if pip cannot install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${STRATA_VENV:-/var/cache/strata-venv}"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "python-env: installing pinned tools into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$wanted" > "$stamp"
fi
echo "$venv"
