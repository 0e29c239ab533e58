"""The node archive that the Comfy Registry gets, built as ``comfy node pack`` builds it.

comfy-cli's ``zip_files`` (``comfy_cli/file_utils.py``) takes the git-tracked files, drops those
matching ``.comfyignore`` (gitignore patterns, read with ``pathspec``), and adds the folders
listed in ``[tool.comfy] includes`` even when untracked or ignored. :func:`archive_files` does the
same (plus untracked files that git does not ignore, so the listing holds before a commit);
``python -m devtools.node_archive`` lists it, ``--zip FILE`` writes the archive.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import tomllib
from pathspec import PathSpec

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git_files(root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted({line for line in listed.splitlines() if line and (root / line).is_file()})


def archive_files(root: Path = REPO_ROOT) -> list[str]:
    """Relative paths of the files the node archive holds."""
    ignore_file = root / ".comfyignore"
    patterns = []
    if ignore_file.is_file():
        patterns = [line.strip() for line in ignore_file.read_text().splitlines()]
        patterns = [line for line in patterns if line and not line.startswith("#")]
    with warnings.catch_warnings():  # comfy-cli's pattern style, deprecated in pathspec 1.x
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = PathSpec.from_lines("gitwildmatch", patterns)
    includes = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])
    prefixes = [include.strip("/") for include in includes]

    def forced(path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)

    files = {path for path in _git_files(root) if forced(path) or not spec.match_file(path)}
    for prefix in prefixes:
        folder = root / prefix
        if folder.is_dir():
            files |= {p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file()}
        elif folder.is_file():
            files.add(prefix)
    return sorted(files)


def write_archive(target: Path, root: Path = REPO_ROOT) -> list[str]:
    """Write the archive as a zip file; return its file list."""
    files = archive_files(root)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(root / path, path)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.node_archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="write the archive to this file")
    args = parser.parse_args(argv)
    files = write_archive(args.zip) if args.zip else archive_files()
    print("\n".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
