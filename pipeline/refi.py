"""The REFI-QDA exchange format: write a project (.qdpx) or a codebook (.qdc), and read a project back.

NVivo, ATLAS.ti, MAXQDA and QualCoder exchange projects as a zip holding
``project.qde`` (XML, namespace ``urn:QDA-XML:project:1.0``) and the sources'
plain text under ``sources/``. Character positions are Unicode code points,
end exclusive. What receiving tools actually need beyond the schema (learnt
from QualCoder's importer): ``origin``, ``creationDateTime`` and
``creatingUser`` wherever they fit, ``plainTextPath`` as an ``internal://``
path, sources in UTF-8 without byte-order mark and with LF line endings,
colours as ``#RRGGBB``, and one selection per coder and code (the coder shown
is the selection's ``creatingUser``).

Everything here is a pure function of the rows it is given: GUIDs are uuid5
of qcode's own ids, timestamps are the stored ones, elements are sorted and
zip entries carry a fixed date, so the same data always gives the same bytes.
"""

from __future__ import annotations

import io
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.errors import ReviewFileError
from pipeline.schemas import Codebook

PROJECT_NS = "urn:QDA-XML:project:1.0"
CODEBOOK_NS = "urn:QDA-XML:codebook:1.0"
GUID_ROOT = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/qcode/refi-qda")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry: no clock in the file
# From QualCoder's palette (it snaps other colours to its nearest one); one per family, framework areas neutral.
FAMILY_COLOURS = {"leadership action": "#81F781", "barrier": "#F78181"}
SPARE_COLOURS = ("#81BEF7", "#F7D358", "#D0A9F5", "#81F7D8")
AREA_COLOUR = "#D1DED2"


def guid(kind: str, *parts: str) -> str:
    """A GUID that names the same qcode thing in every export: ``guid("code", "LA01")``.

    Examples
    --------
    >>> guid("code", "LA01") == guid("code", "LA01") != guid("code", "LA02")
    True
    """
    return str(uuid.uuid5(GUID_ROOT, "\x1f".join((kind, *parts))))


def source_guid(transcript_key: str, version: int) -> str:
    return guid("source", transcript_key, str(version))


def timestamp(moment: datetime) -> str:
    """``2026-12-02T03:04:05Z``: UTC to the second, the form every tool parses."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def family_colour(family: str, families: list[str]) -> str:
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    others = [f for f in families if f not in FAMILY_COLOURS]
    return SPARE_COLOURS[others.index(family) % len(SPARE_COLOURS)]


@dataclass(frozen=True)
class ExchangeUser:
    """A coder (a model) or a reviewer, as a REFI-QDA User."""

    guid: str
    name: str


@dataclass(frozen=True)
class ExchangeSource:
    """One interview: its anonymised text (LF line endings, as stored) and the metadata shown as variables."""

    guid: str
    name: str
    council: str
    council_type: str
    respondent_role: str
    text: str
    created: datetime

    @property
    def path(self) -> str:
        return f"sources/{self.guid}.txt"


@dataclass(frozen=True)
class ExchangeCoding:
    """One code applied by one user to one range of a source: becomes a selection with one Coding."""

    source_guid: str
    start: int
    end: int
    code_id: str
    user_guid: str
    created: datetime
    note: str = ""


def _element(parent: ET.Element, tag: str, ns: str = PROJECT_NS, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{ns}}}{tag}", {k: v for k, v in attributes.items() if v is not None})


def _codes(parent: ET.Element, codebook: Codebook, ns: str) -> None:
    """Framework areas as uncodable parent codes (in first-appearance order), each code under its area."""
    codes = _element(parent, "Codes", ns)
    families = list(dict.fromkeys(c.family for c in codebook.codes))
    areas: dict[str, ET.Element] = {}
    for code in codebook.codes:
        if code.framework_area not in areas:
            areas[code.framework_area] = _element(codes, "Code", ns, guid=guid("framework-area", code.framework_area),
                                                  name=code.framework_area, isCodable="false", color=AREA_COLOUR)
            _element(areas[code.framework_area], "Description", ns).text = "Framework area"
        element = _element(areas[code.framework_area], "Code", ns, guid=guid("code", code.id),
                           name=f"{code.id} {code.label}", isCodable="true",
                           color=family_colour(code.family, families))
        _element(element, "Description", ns).text = f"{code.definition.strip()}\n\nFamily: {code.family}."


def _serialise(root: ET.Element, ns: str) -> bytes:
    ET.register_namespace("", ns)
    ET.indent(root, space="  ")
    text = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n").encode("utf-8")


def codebook_xml(codebook: Codebook) -> bytes:
    """The .qdc document: the codebook alone (namespace ``urn:QDA-XML:codebook:1.0``)."""
    root = ET.Element(f"{{{CODEBOOK_NS}}}CodeBook")
    _codes(root, codebook, CODEBOOK_NS)
    return _serialise(root, CODEBOOK_NS)


VARIABLES = ("council type", "respondent role")


def project_xml(*, name: str, origin: str, codebook: Codebook, users: list[ExchangeUser],
                sources: list[ExchangeSource], codings: list[ExchangeCoding], creating_user: str) -> bytes:
    """The project.qde document for these users, sources and codings (sorted here, so input order never shows)."""
    moments = [s.created for s in sources] + [c.created for c in codings]
    created = timestamp(max(moments)) if moments else None
    root = ET.Element(f"{{{PROJECT_NS}}}Project", {k: v for k, v in dict(
        name=name, origin=origin, creatingUserGUID=creating_user, creationDateTime=created).items() if v})
    users_element = _element(root, "Users")
    for user in sorted(users, key=lambda u: (u.name, u.guid)):
        _element(users_element, "User", guid=user.guid, name=user.name)
    _codes(_element(root, "CodeBook"), codebook, PROJECT_NS)
    variables = _element(root, "Variables")
    for variable in VARIABLES:
        _element(variables, "Variable", guid=guid("variable", variable), name=variable, typeOfVariable="Text")
    sources = sorted(sources, key=lambda s: (s.council, s.name, s.guid))
    councils: dict[str, list[ExchangeSource]] = {}
    for source in sources:
        councils.setdefault(source.council, []).append(source)
    if councils:
        cases = _element(root, "Cases")
        for council, members in councils.items():
            case = _element(cases, "Case", guid=guid("case", council), name=council)
            _variable_value(case, "council type", members[0].council_type)
            for source in members:
                _element(case, "SourceRef", targetGUID=source.guid)
    by_source: dict[str, list[ExchangeCoding]] = {}
    for coding in codings:
        by_source.setdefault(coding.source_guid, []).append(coding)
    if sources:
        sources_element = _element(root, "Sources")
        for source in sources:
            element = _element(sources_element, "TextSource", guid=source.guid, name=source.name,
                               plainTextPath=f"internal://{source.guid}.txt", creatingUser=creating_user,
                               creationDateTime=timestamp(source.created))
            for c in sorted(by_source.get(source.guid, ()), key=lambda c: (c.start, c.end, c.user_guid, c.code_id)):
                selection_id = guid("selection", source.guid, str(c.start), str(c.end), c.user_guid, c.code_id)
                when = timestamp(c.created)
                selection = _element(element, "PlainTextSelection", guid=selection_id, name=c.code_id,
                                     startPosition=str(c.start), endPosition=str(c.end), creatingUser=c.user_guid,
                                     creationDateTime=when)
                if c.note:
                    _element(selection, "Description").text = c.note
                coding = _element(selection, "Coding", guid=guid("coding", selection_id), creatingUser=c.user_guid,
                                  creationDateTime=when)
                _element(coding, "CodeRef", targetGUID=guid("code", c.code_id))
            _variable_value(element, "council type", source.council_type)
            _variable_value(element, "respondent role", source.respondent_role)
    return _serialise(root, PROJECT_NS)


def _variable_value(parent: ET.Element, variable: str, value: str) -> None:
    element = _element(parent, "VariableValue")
    _element(element, "VariableRef", targetGUID=guid("variable", variable))
    _element(element, "TextValue").text = value or ""


def qdpx_bytes(project: bytes, sources: list[ExchangeSource]) -> bytes:
    """The .qdpx zip: project.qde first, then each source's text, every entry with the same fixed date."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [("project.qde", project)] + sorted((s.path, s.text.encode("utf-8")) for s in sources)
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


# Reading ---------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """A coded range as another tool wrote it: source, code points [start, end), who, which codes."""

    source_guid: str
    start: int
    end: int
    user_guid: str | None
    code_guids: tuple[str, ...]
    where: str
    """How to find it in the file for a person: the source's name and the range."""


@dataclass
class QdpxProject:
    users: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    """{code guid: name}, every Code however deeply nested."""
    sources: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """{source guid: (name, plain text or None when the file does not carry it)}."""
    selections: list[Selection] = field(default_factory=list)


def read_qdpx(data: bytes, name: str) -> QdpxProject:
    """Read the parts of a .qdpx qcode can take back, or raise ReviewFileError saying what is wrong with it.

    Accepts what the tools write: any ``.qde`` name, a ``sources`` or
    ``Sources`` folder, a UTF-8 byte-order mark on a source (dropped: positions
    count from the text), namespace versions other than 1.0.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ReviewFileError(name, ["is not a .qdpx project (not a zip file); export the project from your "
                                     "qualitative-analysis tool as REFI-QDA project (.qdpx) and import that"]) from None
    with archive:
        qde = sorted(n for n in archive.namelist() if n.lower().endswith(".qde") and "/" not in n.strip("/"))
        if not qde:
            raise ReviewFileError(name, ["holds no project.qde; it is not a REFI-QDA project export"])
        try:
            root = ET.fromstring(archive.read(qde[0]))
        except ET.ParseError as exc:
            raise ReviewFileError(name, [f"{qde[0]} is not well-formed XML ({exc}); export the project again"]) from None
        files = {n.lower(): n for n in archive.namelist()}

        def source_text(path: str | None) -> str | None:
            if not path or not path.startswith("internal://"):
                return None
            entry = files.get(f"sources/{path[len('internal://'):]}".lower())
            if entry is None:
                return None
            return archive.read(entry).decode("utf-8-sig", errors="replace").replace("\r\n", "\n")

        ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
        if not root.tag.endswith("Project") or not ns.startswith("urn:QDA-XML:project:"):
            raise ReviewFileError(name, [f"{qde[0]} is not a REFI-QDA project (its root element is {root.tag})"])
        q = f"{{{ns}}}"
        project = QdpxProject()
        for user in root.iter(f"{q}User"):
            project.users[user.get("guid", "")] = user.get("name") or ""
        for code in root.iter(f"{q}Code"):
            project.codes[code.get("guid", "")] = code.get("name") or ""
        for source in root.iter(f"{q}TextSource"):
            source_id, source_name = source.get("guid", ""), source.get("name") or source.get("guid", "")
            project.sources[source_id] = (source_name, source_text(source.get("plainTextPath")))
            for selection in source.findall(f"{q}PlainTextSelection"):
                try:
                    start, end = int(selection.get("startPosition")), int(selection.get("endPosition"))
                except (TypeError, ValueError):
                    raise ReviewFileError(name, [f"a selection in {source_name} has no valid startPosition and "
                                                 "endPosition; export the project again"]) from None
                codings = selection.findall(f"{q}Coding")
                user = selection.get("creatingUser") or next(
                    (c.get("creatingUser") for c in codings if c.get("creatingUser")), None)
                refs = tuple(ref.get("targetGUID", "") for c in codings for ref in c.findall(f"{q}CodeRef"))
                project.selections.append(Selection(source_id, start, end, user, refs,
                                                    f"{source_name}, characters {start}-{end}"))
    return project
