#!/usr/bin/env python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack Python packages into one zip that the host puts on PYTHONPATH (Python imports from zip files), so the
harness reaches a host in one file copy instead of one per file. Entries are sorted and dated 1980-01-01:
the same sources give the same bytes, so an unchanged harness copies as unchanged.

Usage: pack_tools.py OUT.zip SOURCE_DIR PACKAGE [PACKAGE ...]"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    out, source, packages = Path(argv[1]), Path(argv[2]), argv[3:]
    files = sorted(path for name in packages for path in (source / name).rglob("*.py"))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(source)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    print(f"{out}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
