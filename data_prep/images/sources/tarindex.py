"""List the members of a tar file (or of a tar stored inside one) with absolute byte offsets.

Workers then read samples with pread at those offsets, so the 138 GB ImageNet train tar is never
extracted. Python's tarfile stops *quietly* when an archive is cut short at a member boundary or a
header is damaged, and never checks that a member's data is present; `list_members` checks both
(member data inside the file, and the end-of-archive zero block where the listing stopped).
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.errors import DataError


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # absolute offset of the member's data in the outermost file
    size: int


class _Window(io.RawIOBase):
    """Read-only view of bytes [base, base + length) of an open file, seekable (what tarfile needs)."""

    def __init__(self, fh: BinaryIO, base: int, length: int):
        super().__init__()
        self.fh, self.base, self.length, self.pos = fh, base, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self.pos = {os.SEEK_SET: pos, os.SEEK_CUR: self.pos + pos, os.SEEK_END: self.length + pos}[whence]
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.length - self.pos))
        self.fh.seek(self.base + self.pos)
        data = self.fh.read(n)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def list_members(fh: BinaryIO, where: str, base: int = 0, length: int | None = None) -> list[Member]:
    """Regular-file members of the tar at [base, base + length) of `fh`; DataError naming `where` if damaged."""
    if length is None:
        length = os.fstat(fh.fileno()).st_size - base
    members: list[Member] = []
    try:
        tar = tarfile.open(fileobj=_Window(fh, base, length), mode="r:")
        for m in tar:
            if not m.isfile():
                continue
            if m.offset_data + m.size > length:
                raise DataError(f"{where}: truncated tar: member {m.name!r} needs {m.offset_data + m.size} bytes, "
                                f"the archive has {length}")
            members.append(Member(m.name, base + m.offset_data, m.size))
        end = tar.offset
    except tarfile.TarError as e:
        raise DataError(f"{where}: corrupt or truncated tar ({type(e).__name__}: {e})") from e
    fh.seek(base + end)
    marker = fh.read(min(512, max(0, length - end)))
    if len(marker) < 512 or marker.count(0) != 512:
        last = f" after member {members[-1].name!r}" if members else ""
        raise DataError(f"{where}: truncated or damaged tar: no end-of-archive block at byte {end}{last}")
    return members
