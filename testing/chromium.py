"""Debian's chromium for browser tests and the demo's browser users: found on
PATH, or installed with apt-get when missing and running as root (as CI does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


class ChromiumMissing(RuntimeError):
    """Chromium is not installed and could not be; the message says how to get it."""


def ensure_chromium() -> str:
    """The path of ``chromium``, installing the Debian package first if needed."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ChromiumMissing(
            "the browser users need Debian's chromium: run `apt-get install -y chromium` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True, timeout=600)
    install = subprocess.run(
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "chromium"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        raise ChromiumMissing(
            f"apt-get install chromium failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}"
        )
    return found


def main() -> None:
    """``python -m tierscope.testing.chromium``: make sure chromium is there (make run)."""
    if shutil.which("chromium") is None:
        print("installing Debian's chromium for the browser users ...", file=sys.stderr, flush=True)
    try:
        print(ensure_chromium())
    except (ChromiumMissing, subprocess.SubprocessError, OSError) as exc:
        raise SystemExit(f"{exc}; the demo runs without browser users") from None


if __name__ == "__main__":
    main()
