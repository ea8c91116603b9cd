"""Reading, choosing and writing MusicXML score parts, and cutting a part into systems.

All trees are stdlib ``xml.etree.ElementTree`` elements. Only ``score-partwise``
documents are supported (MuseScore, our only producer, writes partwise).
"""

from __future__ import annotations

import copy
import io
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

PIANO_NAMES = frozenset({"piano", "grand piano", "acoustic grand piano", "harpsichord", "pianoforte", "piano (2)"})

# MusicXML schema order of <attributes> children (unknown tags sort last, stably).
ATTRIBUTES_ORDER = (
    "footnote", "level", "divisions", "key", "time", "staves", "part-symbol", "instruments",
    "clef", "staff-details", "transpose", "directive", "measure-style",
)

XML_HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN" '
    '"http://www.musicxml.org/dtds/partwise.dtd">\n'
)


class MusicXMLError(ValueError):
    """A file or tree that is not a usable MusicXML score."""


# ---------------------------------------------------------------- reading

def _decode_xml_bytes(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    head = data[:200].decode("ascii", errors="replace")
    match = re.search(r'encoding\s*=\s*["\']([A-Za-z0-9._-]+)["\']', head)
    encoding = match.group(1) if match else "utf-8"
    try:
        return data.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def _strip_prolog(text: str) -> str:
    """Remove the XML declaration and any DOCTYPE (including an internal subset).

    Dropping the DOCTYPE means no DTD or entity declaration is ever processed.
    """
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    start = text.find("<!DOCTYPE")
    if start < 0:
        return text
    i, depth, quote = start + len("<!DOCTYPE"), 0, ""
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == ">" and depth <= 0:
            return text[:start] + text[i + 1:]
        i += 1
    raise MusicXMLError("unterminated <!DOCTYPE> declaration")


def parse_score_string(text: str | bytes, source: str = "<string>") -> ET.Element:
    """Parse MusicXML text into its ``score-partwise`` root."""
    if isinstance(text, bytes):
        text = _decode_xml_bytes(text)
    try:
        root = ET.fromstring(_strip_prolog(text))
    except ET.ParseError as error:
        raise MusicXMLError(f"{source}: not well-formed XML ({error})") from None
    if root.tag == "score-timewise":
        raise MusicXMLError(f"{source}: score-timewise MusicXML is not supported, convert it to partwise")
    if root.tag != "score-partwise":
        raise MusicXMLError(f"{source}: root element is <{root.tag}>, expected <score-partwise>")
    return root


def _read_mxl(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            rootfile = None
            if "META-INF/container.xml" in names:
                try:
                    container = ET.fromstring(_strip_prolog(_decode_xml_bytes(archive.read("META-INF/container.xml"))))
                except ET.ParseError as error:
                    raise MusicXMLError(f"{path}: bad META-INF/container.xml ({error})") from None
                for element in container.iter():
                    if element.tag.rsplit("}", 1)[-1] == "rootfile" and element.get("full-path"):
                        rootfile = element.get("full-path")
                        break
            if rootfile is None:
                candidates = [n for n in names if not n.startswith("META-INF/") and n.endswith((".xml", ".musicxml"))]
                if not candidates:
                    raise MusicXMLError(f"{path}: compressed MusicXML without a score file")
                rootfile = candidates[0]
            if rootfile not in names:
                raise MusicXMLError(f"{path}: container names {rootfile!r}, which the archive lacks")
            return archive.read(rootfile)
    except (zipfile.BadZipFile, OSError) as error:
        raise MusicXMLError(f"{path}: not a readable .mxl archive ({error})") from None


def read_score(path: str | os.PathLike) -> ET.Element:
    """Read a .musicxml/.xml/.mxl file and return its ``score-partwise`` root."""
    path = Path(path)
    if not path.exists():
        raise MusicXMLError(f"{path}: no such file")
    try:
        data = _read_mxl(path) if path.suffix.lower() == ".mxl" else path.read_bytes()
    except FileNotFoundError:
        raise MusicXMLError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MusicXMLError(f"{path}: is a directory, expected a MusicXML file") from None
    return parse_score_string(data, source=str(path))


# ---------------------------------------------------------------- parts

def _part_staves(part: ET.Element) -> int:
    staves = 1
    for element in part.iter("staves"):
        try:
            staves = max(staves, int((element.text or "1").strip()))
        except ValueError:
            pass
    return staves


def find_piano_part(score_root: ET.Element) -> ET.Element:
    """The piano part: named like a piano (spec §2.1), else the last 2-staff part."""
    parts = score_root.findall("part")
    if not parts:
        raise MusicXMLError("the score has no <part>")
    names: dict[str, list[str]] = {}
    part_list = score_root.find("part-list")
    if part_list is not None:
        for score_part in part_list.findall("score-part"):
            texts = [score_part.findtext("part-name") or ""]
            texts += [el.text or "" for el in score_part.iter("instrument-name")]
            names[score_part.get("id", "")] = [t.strip().lower() for t in texts]
    for part in parts:
        if any(name in PIANO_NAMES for name in names.get(part.get("id", ""), [])):
            return part
    two_staff = [part for part in parts if _part_staves(part) == 2]
    if two_staff:
        return two_staff[-1]
    raise MusicXMLError("no piano part: no part is named like a piano and none has 2 staves")


def part_to_score(part: ET.Element, part_id: str = "P1", name: str = "Piano") -> ET.Element:
    """Wrap a copy of ``part`` in a new score-partwise 3.1 with a one-part part-list."""
    score = ET.Element("score-partwise", version="3.1")
    part_list = ET.SubElement(score, "part-list")
    score_part = ET.SubElement(part_list, "score-part", id=part_id)
    ET.SubElement(score_part, "part-name").text = name
    new_part = copy.deepcopy(part)
    new_part.set("id", part_id)
    score.append(new_part)
    return score


def score_to_string(root: ET.Element, *, in_place: bool = False) -> str:
    """Serialize a score (indented, with XML declaration and MusicXML 3.1 DOCTYPE).

    Indenting rewrites whitespace, so it works on a copy unless ``in_place``.
    """
    if not in_place:
        root = copy.deepcopy(root)
    ET.indent(root, space="  ")
    buffer = io.StringIO()
    ET.ElementTree(root).write(buffer, encoding="unicode", xml_declaration=False)
    return XML_HEADER + buffer.getvalue() + "\n"


def sort_attributes(attributes: ET.Element) -> None:
    """Reorder <attributes> children into MusicXML schema order (clefs by staff number)."""
    def key(child: ET.Element) -> tuple[int, int]:
        rank = ATTRIBUTES_ORDER.index(child.tag) if child.tag in ATTRIBUTES_ORDER else len(ATTRIBUTES_ORDER)
        number = 0
        if child.tag == "clef":
            try:
                number = int(child.get("number", "1"))
            except ValueError:
                number = 0
        return rank, number

    children = sorted(list(attributes), key=key)
    for child in list(attributes):
        attributes.remove(child)
    attributes.extend(children)


# ---------------------------------------------------------------- systems

def _is_break(element: ET.Element) -> bool:
    return element.tag == "print" and (element.get("new-system") == "yes" or element.get("new-page") == "yes")


def _head_attributes(measure: ET.Element) -> ET.Element:
    """The <attributes> before the measure's first note/forward/backup, created if missing."""
    insert_at = 0
    for index, child in enumerate(measure):
        if child.tag == "attributes":
            return child
        if child.tag in ("note", "forward", "backup"):
            break
        if child.tag == "print":
            insert_at = index + 1
    attributes = ET.Element("attributes")
    measure.insert(insert_at, attributes)
    return attributes


class _HeaderState:
    """The divisions, key, staves and per-staff clefs in force, tracked through a part."""

    def __init__(self) -> None:
        self.divisions: ET.Element | None = None
        self.keys: list[ET.Element] = []
        self.staves: ET.Element | None = None
        self.clefs: dict[str, ET.Element] = {}

    def update(self, attributes: ET.Element) -> None:
        keys = attributes.findall("key")
        if keys:
            self.keys = [copy.deepcopy(k) for k in keys]
        for tag in ("divisions", "staves"):
            element = attributes.find(tag)
            if element is not None:
                setattr(self, tag, copy.deepcopy(element))
        for clef in attributes.findall("clef"):
            self.clefs[clef.get("number", "1")] = copy.deepcopy(clef)

    def restate_into(self, attributes: ET.Element) -> None:
        """Add what the header lacks: divisions, key, staves, every staff's clef (never time)."""
        if attributes.find("divisions") is None and self.divisions is not None:
            attributes.append(copy.deepcopy(self.divisions))
        if attributes.find("key") is None:
            attributes.extend(copy.deepcopy(k) for k in self.keys)
        if attributes.find("staves") is None and self.staves is not None:
            attributes.append(copy.deepcopy(self.staves))
        present = {clef.get("number", "1") for clef in attributes.findall("clef")}
        for number, clef in self.clefs.items():
            if number not in present:
                attributes.append(copy.deepcopy(clef))
        sort_attributes(attributes)


def split_part_into_systems(part: ET.Element) -> list[ET.Element]:
    """Cut a part at <print new-system|new-page="yes"> into one new <part> per system.

    Break attributes (and prints left empty by removing them) are dropped, and
    each later system's first measure restates divisions, key, staves and all
    clefs so that it can be read alone (spec §1.5). The first system is a plain
    copy. The input part is not modified.
    """
    systems: list[ET.Element] = []
    state = _HeaderState()
    current: ET.Element | None = None
    for measure in part:
        if measure.tag != "measure":
            continue
        measure = copy.deepcopy(measure)
        breaks = [child for child in measure if _is_break(child)]
        restate = False
        if current is None or (breaks and len(current)):
            restate = current is not None  # the first system is left as it is
            current = ET.Element(part.tag, dict(part.attrib))
            systems.append(current)
        for element in breaks:
            element.attrib.pop("new-system", None)
            element.attrib.pop("new-page", None)
            if not element.attrib and len(element) == 0 and not (element.text or "").strip():
                measure.remove(element)
        if restate:
            state.restate_into(_head_attributes(measure))
        for attributes in measure.iter("attributes"):
            state.update(attributes)
        current.append(measure)
    return systems
