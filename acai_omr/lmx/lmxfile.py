"""Reading LMX text files: the fixture format (spec §1.7) and plain one-line-per-system files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .vocab import LMX_TOKEN_SET


@dataclass
class LmxFile:
    header: dict[str, str] = field(default_factory=dict)
    systems: list[list[str]] = field(default_factory=list)


def parse_lmx_text(text: str, source: str = "<string>", *, validate: bool = True) -> LmxFile:
    """Parse LMX text. With a ``---`` line it is the fixture format: ``key: value``
    header lines, then systems separated by ``---``, ``#`` comments, free
    whitespace. Without one, every non-empty line is one system. With
    ``validate``, tokens outside the vocabulary raise ValueError.
    """
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    result = LmxFile()
    if any(line.strip() == "---" for line in lines):
        chunks: list[list[str]] = [[]]
        for line in lines:
            if line.strip() == "---":
                chunks.append([])
            else:
                chunks[-1].append(line)
        for line in chunks[0]:
            if line.strip():
                key, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(f"{source}: header line {line.strip()!r} is not 'key: value'")
                result.header[key.strip()] = value.strip()
        result.systems = [" ".join(chunk).split() for chunk in chunks[1:]]
    else:
        result.systems = [line.split() for line in lines if line.strip()]
    if not validate:
        return result
    for number, system in enumerate(result.systems, start=1):
        for token in system:
            if token not in LMX_TOKEN_SET:
                raise ValueError(f"{source}: system {number}: token {token!r} is not in the LMX vocabulary")
    return result


def load_lmx_file(path: str | os.PathLike, *, validate: bool = True) -> LmxFile:
    """Read an .lmx file (see parse_lmx_text)."""
    return parse_lmx_text(Path(path).read_text(encoding="utf-8"), source=str(path), validate=validate)
