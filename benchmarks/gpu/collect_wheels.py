"""Collect the wheels the GPU check needs into benchmarks/gpu/wheels/ (git-ignored), for a machine with no network.

    python benchmarks/gpu/collect_wheels.py                       # the versions installed here, for this Python
    python benchmarks/gpu/collect_wheels.py --python-version 3.12 # the GPU image's Python, if it differs
    python benchmarks/gpu/collect_wheels.py --with-wandb          # also wandb (~+14 MB: over the 60 MB budget)

The GPU image has torch, transformers, accelerate and peft (and their dependencies) but not trl, datasets, deepspeed
or wandb. This script walks the installed metadata of those four packages, keeps every dependency that the image
does not already have (anything torch, transformers, accelerate or peft pull in counts as present), and downloads
each as a binary wheel pinned to the version installed here, so the GPU machine runs the versions the test suite
ran. DeepSpeed is published as a source archive only: its wheel is built here (`pip wheel`, no compiled ops: they
are built just in time). `benchmarks/gpu/check.py` installs the folder offline (`pip install --no-index
--find-links`). vLLM cannot be carried this way (hundreds of MB with its own torch build): see docs/scaling.md.

Size. The folder must stay under 60 MB to travel with the tree. pyarrow (a `datasets` dependency, which TRL
imports) alone is a 52 MB wheel, pandas 12 MB: so every wheel over 1 MB is rewritten with LZMA instead of deflate
(the same files and permissions; pip installs it like any wheel), 52 -> 38 MB for pyarrow. wandb (19 MB, 13 MB
recompressed) would still break the budget, and the check logs nothing to W&B (rlcal imports wandb only when
`report_to` names it), so it is collected only with --with-wandb.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
WANTED = ("trl", "datasets", "deepspeed")  # + wandb with --with-wandb
PRESENT = ("torch", "transformers", "accelerate", "peft")  # what the GPU image has
LIMIT_MB = 60.0


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...], python_version: str) -> dict[str, str]:
    """canonical name -> installed version of `roots` and their runtime dependencies (no extras), as installed."""
    env = dict(default_environment(), python_version=python_version, python_full_version=f"{python_version}.0")
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: not needed by the installed versions either
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
    return found


def needed(python_version: str, wanted: tuple[str, ...] = WANTED) -> dict[str, str]:
    present = closure(PRESENT, python_version)
    return {n: v for n, v in sorted(closure(wanted, python_version).items()) if n not in present}


def recompress(wheel: Path) -> None:
    """Rewrite `wheel` with LZMA-compressed members (names, dates and permission bits kept), in place."""
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zout:
        if all(i.compress_type == zipfile.ZIP_LZMA for i in zin.infolist()):
            tmp.unlink()
            return  # already done (a rerun)
        for info in zin.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.external_attr, member.compress_type = info.external_attr, zipfile.ZIP_LZMA
            zout.writestr(member, zin.read(info))
    tmp.replace(wheel)


def download(packages: dict[str, str], out: Path, python_version: str, glibc_minor: int) -> None:
    pip = [sys.executable, "-m", "pip"]
    binary = [f"{n}=={v}" for n, v in packages.items() if n != "deepspeed"]
    tags = ["--only-binary=:all:", "--python-version", python_version]
    for tag in [
        *(f"manylinux_2_{minor}_x86_64" for minor in range(17, glibc_minor + 1)),
        "manylinux2014_x86_64",
        "any",
    ]:
        tags += ["--platform", tag]
    subprocess.run([*pip, "download", "--no-deps", *tags, "-d", str(out), *binary], check=True)
    if "deepspeed" in packages:  # sdist only on PyPI; a py3-none-any wheel (ops are compiled just in time)
        ds = f"deepspeed=={packages['deepspeed']}"
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), ds], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "wheels", help="wheel folder (default: %(default)s)")
    parser.add_argument(
        "--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}", help="the GPU image's Python"
    )
    parser.add_argument(
        "--glibc-minor", type=int, default=28, help="newest manylinux_2_N wheels the GPU image's glibc takes (2.N)"
    )
    parser.add_argument("--with-wandb", action="store_true", help="also collect wandb and its dependencies")
    parser.add_argument("--list", action="store_true", help="print the packages and versions; download nothing")
    args = parser.parse_args(argv)

    packages = needed(args.python_version, WANTED + (("wandb",) if args.with_wandb else ()))
    if args.list:
        print("\n".join(f"{n}=={v}" for n, v in packages.items()))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    download(packages, args.out, args.python_version, args.glibc_minor)
    wheels = sorted(args.out.glob("*.whl"))
    for wheel in wheels:
        if wheel.stat().st_size > 2**20:
            recompress(wheel)
    total = sum(p.stat().st_size for p in wheels) / 2**20
    for p in wheels:
        print(f"{p.stat().st_size / 2**20:7.2f} MB  {p.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MB in {args.out} (limit {LIMIT_MB:.0f} MB)")
    return 0 if total <= LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
