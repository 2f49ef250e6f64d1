#!/usr/bin/env bash
# Install vislang into ./.venv. Idempotent: a second run checks and changes nothing.
#   bash setup.sh          # the package, ready for `vislang demo`
#   bash setup.sh --dev    # plus test, lint and reference-metric tools
# Environment: PYTHON (interpreter, default python3), VISLANG_VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv="${VISLANG_VENV:-.venv}"
extras="data"
[ "${1:-}" = "--dev" ] && extras="data,hf,dev"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"

# torch first, and exactly 2.13.0: on CPU machines that is the local CPU wheel; any other request would
# pull several GB of CUDA packages.
if ! "$py" -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  "$py" -m pip install -q torch==2.13.0
fi

stamp="$venv/.vislang-$extras.stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing vislang[$extras]"
  "$py" -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi

# The real data sets come from package registries at build time: npm (emoji) and apt (tuxpaint).
command -v npm >/dev/null || echo "setup: note: npm not found; 'vislang data prepare emoji' needs Node.js/npm"
if [ "$extras" != "data" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
    && [ ! -d /usr/share/tuxpaint/stamps ] \
    && ! apt-cache show tuxpaint-stamps-default >/dev/null 2>&1; then
  echo "setup: refreshing apt package lists (tuxpaint data is fetched with apt-get download)"
  apt-get update -qq
fi
echo "setup: ready ($("$py" -c 'import vislang, torch; print("vislang", vislang.__version__, "torch", torch.__version__)'))"
