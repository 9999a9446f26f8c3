#!/usr/bin/env bash
# Create benchmarks/.venv-peers with the peer systems we measure beside the engine (Ray, and
# Tensorlake for later comparisons). Kept apart from the project's environment so that their
# dependency pins never touch ours. Idempotent and quiet when everything is already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
packages=(ray tensorlake)

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup_peers: creating $venv" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

missing=()
for pkg in "${packages[@]}"; do
    # `pip show` exits non-zero for a package that is not installed.
    "$venv/bin/python" -m pip show --quiet "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if (( ${#missing[@]} )); then
    echo "setup_peers: installing ${missing[*]} into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
