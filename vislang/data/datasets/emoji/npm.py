"""The npm packages of the emoji dataset: pinned versions, installed once under the data root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from vislang.data.datasets.emoji.styles import STYLES
from vislang.errors import ExternalToolError
from vislang.utils.io import atomic_write_json

PACKAGES: dict[str, str] = {
    "emojibase-data": "17.0.0",
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "openmoji": "17.0.0",
    "@iconify-json/fluent-emoji-flat": "1.2.6",
    "@iconify-json/fluent-emoji-high-contrast": "1.2.6",
    "@iconify-json/emojione": "1.2.3",
    "@iconify-json/emojione-monotone": "1.2.1",
    "@iconify-json/noto-v1": "1.2.5",
}
"""npm packages and the exact versions every build uses."""

NPM_DIR_ENV = "VISLANG_EMOJI_NPM_DIR"
"""Environment variable naming an existing ``node_modules`` that holds :data:`PACKAGES` (skips npm)."""

_MARKER = "vislang-installed.json"


def packages_for(styles: tuple[str, ...] | list[str] | None = None) -> dict[str, str]:
    """The pinned packages a build with these styles needs: the text and each style's images (None: all)."""
    if styles is None:
        return dict(PACKAGES)
    names = {"emojibase-data", *(STYLES[s].package for s in styles)}
    return {p: v for p, v in PACKAGES.items() if p in names}


def _missing_packages(node_modules: Path, packages: dict[str, str]) -> list[str]:
    """Packages absent from ``node_modules`` (a folder without package.json counts)."""
    return [name for name in packages if not (node_modules / name / "package.json").is_file()]


def _installed_version(node_modules: Path, name: str) -> str | None:
    try:
        return json.loads((node_modules / name / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, json.JSONDecodeError):
        return None


def npm_prefix(root: str | os.PathLike) -> Path:
    """Where ``prepare`` installs the npm packages under a data root."""
    return Path(root) / "_npm" / "emoji"


def ensure_packages(root: str | os.PathLike, styles: tuple[str, ...] | list[str] | None = None) -> Path:
    """The ``node_modules`` folder holding the packages of ``styles``, installing them with npm when missing.

    ``$VISLANG_EMOJI_NPM_DIR`` wins when set (it must already hold the packages). Otherwise the packages go
    to ``<root>/_npm/emoji``; a marker file written after npm succeeds makes later calls instant and an
    interrupted install be redone.

    Args:
        root: The data root.
        styles: Style names whose images are needed (None: every package of :data:`PACKAGES`).

    Returns:
        The ``node_modules`` folder.

    Raises:
        ExternalToolError: npm is needed but absent, or ``npm install`` failed, or the folder named by the
            environment variable lacks a package.
    """
    packages = packages_for(styles)
    env = os.environ.get(NPM_DIR_ENV)
    if env:
        node_modules = Path(env).expanduser()
        missing = _missing_packages(node_modules, packages)
        if missing:
            raise ExternalToolError(
                f"{NPM_DIR_ENV}={env} lacks {', '.join(missing)}; install them there with "
                f"`npm install {' '.join(f'{p}@{packages[p]}' for p in missing)}` or unset {NPM_DIR_ENV}")
        for name, version in packages.items():
            found = _installed_version(node_modules, name)
            if found != version:
                print(f"warning: emoji: {name} in {NPM_DIR_ENV} is version {found}, built data expects "
                      f"{version}; counts may differ from the documented ones", file=sys.stderr)
        return node_modules

    prefix = npm_prefix(root)
    node_modules = prefix / "node_modules"
    marker = prefix / _MARKER
    try:
        installed = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        installed = {}
    if not isinstance(installed, dict):
        installed = {}
    missing = [p for p, v in packages.items()
               if installed.get(p) != v or _installed_version(node_modules, p) != v]
    if not missing:
        return node_modules
    npm = shutil.which("npm")
    if npm is None:
        raise ExternalToolError(
            "the emoji dataset needs npm to download its images and text "
            f"({', '.join(f'{p}@{packages[p]}' for p in missing)}), and npm is not on PATH. "
            "Install Node.js (it includes npm: https://nodejs.org, or `apt-get install npm`), or set "
            f"{NPM_DIR_ENV} to a node_modules folder that already holds these packages.")
    # npm install --save-exact keeps what an earlier call installed (it is in the prefix's package.json)
    _npm_install(npm, prefix, missing)
    atomic_write_json(marker, {p: v for p, v in PACKAGES.items()
                               if _installed_version(node_modules, p) == v})
    still = [p for p in packages if _installed_version(node_modules, p) != packages[p]]
    if still:
        raise ExternalToolError(f"npm install finished but {', '.join(still)} is not in {node_modules}")
    return node_modules


def _npm_install(npm: str, prefix: Path, packages: list[str]) -> None:
    specs = [f"{p}@{PACKAGES[p]}" for p in packages]
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"emoji: installing {' '.join(specs)} with npm into {prefix} (once)", file=sys.stderr)
    start = time.monotonic()
    cmd = [npm, "install", "--prefix", str(prefix), "--save-exact", "--no-audit", "--no-fund",
           "--no-update-notifier", *specs]
    tail: deque[str] = deque(maxlen=15)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise ExternalToolError(f"cannot run npm ({npm}): {e}") from None
    assert proc.stderr is not None
    for line in proc.stderr:
        tail.append(line.rstrip())
        print(f"  npm: {line.rstrip()}", file=sys.stderr)
    rc = proc.wait()
    if rc != 0:
        raise ExternalToolError(
            f"`{' '.join(cmd[1:])}` failed with exit status {rc}:\n" + "\n".join(tail) + "\n"
            f"Check access to the npm registry, or set {NPM_DIR_ENV} to a node_modules folder that holds "
            "the packages.")
    print(f"emoji: npm install done in {time.monotonic() - start:.0f} s", file=sys.stderr)
