#!/usr/bin/env bash
# Install vislang into ./.venv. Idempotent: a second run checks and changes nothing.
#   bash setup.sh          # the package, ready for `vislang demo` and `vislang serve`
#   bash setup.sh --dev    # plus test, lint and reference-metric tools, and chromium for the browser tests
# Environment: PYTHON (interpreter, default python3), VISLANG_VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv="${VISLANG_VENV:-.venv}"
dev=0
[ "${1:-}" = "--dev" ] && dev=1
# the demo builds data (data), trains its search model on the MiniLM text tower (hf), indexes the test images
# (index) and prints the command that serves them (serve)
extras="data,hf,index,serve,generate"
[ "$dev" = 1 ] && extras="data,hf,index,serve,generate,dev"

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
if [ "$dev" = 1 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
    && [ ! -d /usr/share/tuxpaint/stamps ] \
    && ! apt-cache show tuxpaint-stamps-default >/dev/null 2>&1; then
  echo "setup: refreshing apt package lists (tuxpaint data is fetched with apt-get download)"
  apt-get update -qq
fi
# The browser tests (tests/serve/test_browser.py) drive Debian's chromium through Playwright; without it they skip.
if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium (apt-get) for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "setup: ready ($("$py" -c 'import vislang, torch; print("vislang", vislang.__version__, "torch", torch.__version__)'))"
