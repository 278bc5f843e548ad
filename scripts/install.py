"""Create the virtual environment and install slicewise into it (`make setup` runs this).

    python3 scripts/install.py [--venv .venv] [--pip]

uv does the install: 15 s where pip took 86 s (bench/bench_fresh_clone.py measures both side
by side). uv does not read pip's configuration, so the find-links, index URLs and constraint
files that pip is configured with (`pip config list`, PIP_* variables included) are passed to
it, and uv resolves like pip (best version over all indexes): both install the same files. uv
is itself installed with pip into the environment. If uv fails, or with `--pip`, pip does the
install.

torch goes first, pinned exactly: `torch==2.13.0` resolves to the CPU wheel this machine keeps
on disk, where a looser requirement pulls the CUDA build and several GB of CUDA packages.
The project then installs editable with its dev, demo and bench extras, pinned by
constraints.txt (versions installed and tested together).

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
PROJECT = ["-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev,demo,bench]"]


def run(cmd: list[str]) -> None:
    """Echo `cmd`, run it, raise on failure."""
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def pip_settings(python: str) -> dict[str, list[str]]:
    """The `find-links`, `index-url`, `extra-index-url` and `constraint` values pip is set with.

    From every place pip reads (its files and PIP_* variables), as `pip config list` gives them.
    """
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():  # `global.find-links='/opt/wheels'`, `:env:.constraint='…'`
        key, sep, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if sep and name in ("find-links", "index-url", "extra-index-url", "constraint"):
            for item in value.strip().strip("'\"").split():
                if item not in settings.setdefault(name, []):
                    settings[name].append(item)
    return settings


def uv_args(settings: dict[str, list[str]]) -> list[str]:
    """The uv options that resolve like pip with `settings`."""
    args = ["--index-strategy", "unsafe-best-match"]
    flags = {"find-links": "--find-links", "extra-index-url": "--extra-index-url"}
    flags |= {"index-url": "--index-url", "constraint": "--constraint"}
    for name, flag in flags.items():
        for value in settings.get(name, []):
            args += [flag, value]
    return args


def with_uv(python: str) -> None:
    """Install uv with pip, then torch and the project with uv (told pip's settings)."""
    run([python, "-m", "pip", "install", "-q", "uv"])
    uv = [str(Path(python).parent / "uv"), "pip", "install", "-q", "--python", python]
    uv += uv_args(pip_settings(python))
    run([*uv, TORCH])
    run([*uv, *PROJECT])


def with_pip(python: str) -> None:
    """Install torch and the project with pip (its own settings apply)."""
    run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([python, "-m", "pip", "install", "-q", TORCH])
    run([python, "-m", "pip", "install", "-q", *PROJECT])


def main() -> int:
    """Create the environment and install into it; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="where (default: .venv)")
    parser.add_argument("--pip", action="store_true", help="install with pip, not uv")
    args = parser.parse_args()
    t0 = time.perf_counter()
    run([sys.executable, "-m", "venv", args.venv])
    python = str(Path(args.venv) / "bin" / "python")
    how = "pip"
    if not args.pip:
        try:
            with_uv(python)
            how = "uv"
        except subprocess.CalledProcessError as e:
            print(f"install: uv failed ({e}); installing with pip instead (minutes)", flush=True)
    if how == "pip":
        with_pip(python)
    print(f"install: {args.venv} ready with {how} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
