"""Safe extraction of zip and tar archives (plain, gzip, bzip2, xz, zstd), with no HTTP and no
threads: tar from a binary stream read once in order, zip through a random-access reader.

Every format obeys the same rules. Nothing is written outside the destination: absolute paths,
drive letters, `..` components and paths through a link of the archive are refused, backslashes
count as separators. Symbolic links must resolve inside the destination (relative targets
only), hard links must point to a regular file extracted before them; device files, FIFOs and
sockets are refused; modes are at most 0o755 (directories, executables) or 0o644, without
setuid, setgid or sticky bits, and owners are not applied. Bomb limits (`Limits`) count the
bytes actually decompressed. Nothing in the destination is overwritten unless `overwrite=True`
(or, when `overwrite` is a set of paths relative to it, only those).
Members are extracted into a staging folder inside the destination and moved into place only
when the whole archive was read and checked: a failed, refused or interrupted extraction leaves
the destination as it was.

`include` patterns match a member's path before `strip_components` removes its leading
components, as GNU tar matches them; a pattern that matches a directory selects everything
below it.
"""

from __future__ import annotations

from .detect import DETECT_SIZE, FORMATS, detect_format
from .extractor import ExtractResult
from .safety import Limits
from .tarstream import BinaryReader, extract_stream
from .zipread import (
    Reader,
    ZipDirectory,
    ZipMember,
    cd_tail_range,
    extract_zip,
    member_ranges,
    read_central_directory,
    select_members,
)

__all__ = [
    "DETECT_SIZE",
    "FORMATS",
    "BinaryReader",
    "ExtractResult",
    "Limits",
    "Reader",
    "ZipDirectory",
    "ZipMember",
    "cd_tail_range",
    "detect_format",
    "extract_stream",
    "extract_zip",
    "member_ranges",
    "read_central_directory",
    "select_members",
]
