"""REFI-QDA exchange: a .qdpx/.qdc that validates and reads back as the database, and a corrected .qdpx as gold."""

from __future__ import annotations

import io
import re
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import xmlschema
from click.testing import CliRunner

from conftest import query
from pipeline import review_steps
from pipeline.cli import main
from pipeline.codebook import load_codebook
from pipeline.errors import ReviewFileError
from pipeline.exchange import export_qdc, export_qdpx
from pipeline.refi import CODEBOOK_NS, PROJECT_NS, guid, read_qdpx

SCHEMA_DIR = Path(__file__).parent / "refi-qda"
Q = f"{{{PROJECT_NS}}}"


@pytest.fixture(scope="module")
def project_schema():
    return xmlschema.XMLSchema(SCHEMA_DIR / "Project-mrt2019.xsd")


@pytest.fixture(scope="module")
def codebook_schema():
    """The REFI codebook schema is the project schema's CodeBookType as root, in the codebook namespace."""
    text = (SCHEMA_DIR / "Project-mrt2019.xsd").read_text(encoding="utf-8").replace(PROJECT_NS, CODEBOOK_NS)
    declaration = '<xsd:element name="Project" type="ProjectType">'
    return xmlschema.XMLSchema(text.replace(declaration, '<xsd:element name="CodeBook" type="CodeBookType"/>'
                                            + declaration))


def review_some(settings, tmp_path, reviewer="Ana") -> dict[str, tuple[str, ...]]:
    """A reviewer decides three passages through a review CSV (codes changed on one, confirmed on two)."""
    rows = query(settings, "SELECT passage_id FROM passages WHERE retired_at IS NULL ORDER BY passage_id LIMIT 3")
    decided = {rows[0][0]: ("LA01", "BR03"), rows[1][0]: ("LA02",), rows[2][0]: ()}
    path = tmp_path / "ana.csv"
    path.write_text("passage_id,codes,reviewed,note\n" + "".join(
        f"{pid},{'; '.join(codes)},yes,{'checked' if i == 0 else ''}\n" for i, (pid, codes) in enumerate(decided.items())),
        encoding="utf-8")
    [(_, result)] = review_steps.import_review_files(settings, [path], reviewer=reviewer)
    assert result.applied == 3
    return decided


def database_codings(settings) -> set[tuple[str, str, str]]:
    """(passage, code, coder name) of every applied coding: each model's, and each reviewer's newest decision."""
    model = query(settings, "SELECT c.passage_id, c.code_id, 'qcode ' || k.coder_id || ' (' || k.model_id || "
                            "', codebook ' || k.codebook_version || ')' FROM codings c JOIN coders k USING (coder_id) "
                            "JOIN passages p USING (passage_id) WHERE c.applied AND p.retired_at IS NULL")
    reviewers = query(settings, "SELECT passage_id, unnest(codes), reviewer FROM reviewer_codes")
    return set(model) | set(reviewers)


def read_back(data: bytes, settings) -> set[tuple[str, str, str]]:
    """The export's selections as (passage, code, user name), passages found by their exact character range."""
    project = read_qdpx(data, "export.qdpx")
    places = {}
    for pid, key, version, start, end, text, whole in query(
            settings, "SELECT p.passage_id, p.transcript_key, p.version, p.start_char, p.end_char, p.text, "
                      "t.anonymised_text FROM passages p JOIN transcripts t USING (transcript_key, version) "
                      "WHERE p.retired_at IS NULL"):
        assert whole[start:end] == text  # offsets are code points into the stored anonymised text
        places[(guid("source", key, str(version)), start, end)] = pid
    code_names = {guid("code", code): code for code in load_codebook(settings.codebook_path).ids}
    back = set()
    for s in project.selections:
        name, text = project.sources[s.source_guid]
        [code] = s.code_guids  # one coding per selection: the coder shown is the selection's
        back.add((places[(s.source_guid, s.start, s.end)], code_names[code], project.users[s.user_guid]))
    return back


def test_project_export_validates_and_holds_what_receiving_tools_need(coded_world, tmp_path, project_schema):
    _, settings = coded_world
    review_some(settings, tmp_path)
    export = export_qdpx(settings)
    assert export.result.path == settings.out_dir / "qcode.qdpx"
    with zipfile.ZipFile(export.result.path) as archive:
        project = archive.read("project.qde")
        project_schema.validate(io.BytesIO(project))
        root = ET.fromstring(project)
        assert root.get("origin", "").startswith("qcode") and root.get("creationDateTime")
        assert root.get("creatingUserGUID") in {u.get("guid") for u in root.iter(f"{Q}User")}
        stored = dict(((key, version), text) for key, version, text in query(
            settings, "SELECT transcript_key, version, anonymised_text FROM transcripts WHERE retired_at IS NULL"))
        sources = list(root.iter(f"{Q}TextSource"))
        assert len(sources) == export.sources == len(stored) == 2
        for source in sources:
            assert source.get("creationDateTime") and source.get("creatingUser")
            path = source.get("plainTextPath")
            assert path.startswith("internal://")
            raw = archive.read("sources/" + path[len("internal://"):])
            assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw
            assert raw.decode("utf-8") in stored.values()
            for selection in source.iter(f"{Q}PlainTextSelection"):
                assert selection.get("creatingUser") and selection.get("creationDateTime")
                assert len(selection.findall(f"{Q}Coding")) == 1
    codes = [c for c in root.iter(f"{Q}Code") if c.get("isCodable") == "true"]
    assert len(codes) == export.codes == 24
    assert all(len(c.get("color")) == 7 for c in root.iter(f"{Q}Code"))
    assert {c.get("color") for c in codes} == {"#81F781", "#F78181"}  # one per family
    areas = [c for c in root.find(f"{Q}CodeBook/{Q}Codes")]
    assert all(a.get("isCodable") == "false" and len(a.findall(f"{Q}Code")) for a in areas)
    assert {c.get("name") for c in root.iter(f"{Q}Case")} == {"Westmarch", "Fenley"}
    assert {v.get("name") for v in root.iter(f"{Q}Variable")} == {"council type", "respondent role"}
    names = {u.get("name") for u in root.iter(f"{Q}User")}
    assert "Ana" in names and any(n.startswith("qcode ") and "codebook " in n for n in names)
    assert {d.text for d in root.iter(f"{Q}Description")} >= {"checked"}  # the reviewer's note, on their selections


def test_reading_the_export_back_gives_the_database_codings(coded_world, tmp_path):
    _, settings = coded_world
    review_some(settings, tmp_path)
    export = export_qdpx(settings)
    expected = database_codings(settings)
    assert read_back(export.result.path.read_bytes(), settings) == expected
    assert export.codings == len(expected) and any(coder == "Ana" for _, _, coder in expected)


def test_a_second_export_of_the_same_data_is_byte_identical(coded_world, tmp_path):
    _, settings = coded_world
    review_some(settings, tmp_path)
    first = export_qdpx(settings, out=tmp_path / "first.qdpx")
    second = export_qdpx(settings, out=tmp_path / "second.qdpx")
    assert first.result.path.read_bytes() == second.result.path.read_bytes()
    again = export_qdpx(settings, out=tmp_path / "first.qdpx")
    assert again.result.status == "unchanged"


def test_one_councils_export_holds_only_its_interviews(coded_world, tmp_path, project_schema):
    _, settings = coded_world
    export = export_qdpx(settings, council="westmarch")
    assert export.result.path.name == "qcode-westmarch.qdpx"
    project = read_qdpx(export.result.path.read_bytes(), "w.qdpx")
    assert [name for name, _ in project.sources.values()] == ["Westmarch WMC-01"]
    with zipfile.ZipFile(export.result.path) as archive:
        project_schema.validate(io.BytesIO(archive.read("project.qde")))


def test_codebook_export_validates_against_the_codebook_schema(coded_world, codebook_schema):
    _, settings = coded_world
    result, codes = export_qdc(settings)
    codebook_schema.validate(str(result.path))
    root = ET.parse(result.path).getroot()
    assert root.tag == f"{{{CODEBOOK_NS}}}CodeBook" and codes == 24
    described = [c for c in root.iter(f"{{{CODEBOOK_NS}}}Code") if c.get("isCodable") == "true"]
    assert len(described) == 24 and all(c.find(f"{{{CODEBOOK_NS}}}Description").text for c in described)


# Importing a .qdpx corrected in another tool ----------------------------------------------------------------------

GUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def corrected_copy(export_path: Path, out: Path, selections: list[tuple[int, int, str]], *, user="Team NVivo",
                   source_index=0, new_guids=False) -> Path:
    """The export as another tool would send it back: a new user who coded ``(start, end, code id)`` ranges.

    ``new_guids``: every GUID replaced by one of the tool's own, as QualCoder does when it exports.
    """
    with zipfile.ZipFile(export_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if new_guids:
        def rekey(match):
            return str(uuid.uuid5(uuid.NAMESPACE_OID, match.group().decode())).encode()
        entries = {GUID.sub(rekey, name.encode()).decode(): GUID.sub(rekey, data) if name.endswith(".qde") else data
                   for name, data in entries.items()}
    ET.register_namespace("", PROJECT_NS)
    root = ET.fromstring(entries["project.qde"])
    user_guid = "0b7e2c1e-5d0a-4c9a-9a51-2f8e6a0d1c11"
    ET.SubElement(root.find(f"{Q}Users"), f"{Q}User", guid=user_guid, name=user)
    source = list(root.iter(f"{Q}TextSource"))[source_index]
    for i, (start, end, code) in enumerate(selections):
        selection = ET.Element(f"{Q}PlainTextSelection", guid=f"0b7e2c1e-5d0a-4c9a-9a51-{i:012d}",
                               startPosition=str(start), endPosition=str(end), creatingUser=user_guid)
        coding = ET.SubElement(selection, f"{Q}Coding", guid=f"1b7e2c1e-5d0a-4c9a-9a51-{i:012d}")
        code_guid = guid("code", code) if len(code) == 4 else code
        if new_guids and len(code) == 4:
            code_guid = str(uuid.uuid5(uuid.NAMESPACE_OID, code_guid))
        ET.SubElement(coding, f"{Q}CodeRef", targetGUID=code_guid)
        source.insert(0, selection)
    entries["project.qde"] = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out


def first_source_passages(export_path: Path, settings) -> list[tuple[str, int, int]]:
    project = read_qdpx(export_path.read_bytes(), "x")
    first = next(iter(ET.fromstring(zipfile.ZipFile(export_path).read("project.qde")).iter(f"{Q}TextSource")))
    key = [(k, v) for k, v in query(settings, "SELECT transcript_key, version FROM transcripts")
           if guid("source", k, str(v)) == first.get("guid")][0]
    assert first.get("guid") in project.sources
    return query(settings, "SELECT passage_id, start_char, end_char FROM passages WHERE transcript_key = ? "
                           "AND version = ? AND retired_at IS NULL ORDER BY start_char", key)


def test_codings_by_another_tools_user_become_reviewer_decisions(coded_world, tmp_path):
    _, settings = coded_world
    export = export_qdpx(settings)
    passages = first_source_passages(export.result.path, settings)
    (p0, s0, e0), (p1, s1, e1), (p2, s2, e2) = passages[:3]
    # An exact passage, a range over two passages (mapped to both), and two codes on one passage.
    path = corrected_copy(export.result.path, tmp_path / "corrected.qdpx",
                          [(s0, e0, "LA03"), (s1 + 2, e2 - 2, "BR01"), (s2, e2, "LA05")])
    [(_, result)] = review_steps.import_review_files(settings, [path])
    assert not isinstance(result, ReviewFileError), result
    assert (result.applied, result.remapped_codings) == (3, 1)
    gold = {pid: set(codes) for pid, codes in query(settings, "SELECT passage_id, codes FROM gold "
                                                              "WHERE reviewer = 'Team NVivo'")}
    assert gold == {p0: {"LA03"}, p1: {"BR01"}, p2: {"LA05", "BR01"}}
    history = query(settings, "SELECT count(*), min(source_file) FROM review_decisions")
    assert history == [(3, "corrected.qdpx")]
    [(_, again)] = review_steps.import_review_files(settings, [path])
    assert (again.applied, again.unchanged) == (0, 3)  # the same file twice changes nothing


def test_a_tool_that_writes_its_own_guids_is_matched_by_text_code_id_and_name(coded_world, tmp_path):
    _, settings = coded_world
    export = export_qdpx(settings)
    (p0, s0, e0), (p1, s1, e1) = first_source_passages(export.result.path, settings)[:2]
    path = corrected_copy(export.result.path, tmp_path / "rekeyed.qdpx", [(s0, e0, "LA03"), (s1, e1, "BR02")],
                          new_guids=True)
    exported = set(read_qdpx(export.result.path.read_bytes(), "e").sources)
    assert not set(read_qdpx(path.read_bytes(), "r").sources) & exported
    [(_, result)] = review_steps.import_review_files(settings, [path])
    assert not isinstance(result, ReviewFileError), result
    assert result.applied == 2 and not result.warnings  # the model's codings, under new user GUIDs, decide nothing
    assert dict(query(settings, "SELECT passage_id, codes FROM gold")) == {p0: ["LA03"], p1: ["BR02"]}


def test_reviewer_codings_qcode_exported_come_back_unchanged(coded_world, tmp_path):
    _, settings = coded_world
    review_some(settings, tmp_path)
    export = export_qdpx(settings)
    [(_, result)] = review_steps.import_review_files(settings, [export.result.path])
    assert result.applied == 0 and result.unchanged == 2  # Ana's two decisions with codes; the model's are skipped
    assert query(settings, "SELECT count(*) FROM review_decisions") == [(3,)]


def test_a_qdpx_with_any_problem_is_rejected_whole(coded_world, tmp_path):
    _, settings = coded_world
    export = export_qdpx(settings)
    passages = first_source_passages(export.result.path, settings)
    (_, s0, e0), (_, s1, _) = passages[:2]
    path = corrected_copy(export.result.path, tmp_path / "bad.qdpx",
                          [(s0, e0, "LA03"), (s1, s1 + 5, "11111111-2222-3333-4444-555555555555"), (0, 3, "LA01"),
                           (10 ** 6, 10 ** 6 + 5, "LA02")])
    [(_, outcome)] = review_steps.import_review_files(settings, [path])
    assert isinstance(outcome, ReviewFileError)
    problems = "\n".join(outcome.problems)
    assert "is not a code of the qcode codebook" in problems
    assert "covers no respondent passage" in problems  # characters 0-3: the interviewer's opening question
    assert "outside the interview" in problems
    assert len(outcome.problems) == 3
    assert query(settings, "SELECT count(*) FROM review_decisions") == [(0,)]
    (tmp_path / "not.qdpx").write_bytes(b"PK not really")
    [(_, broken)] = review_steps.import_review_files(settings, [tmp_path / "not.qdpx"])
    assert isinstance(broken, ReviewFileError) and "not a zip file" in str(broken)


def test_cli_exports_and_imports_a_qdpx(coded_world, tmp_path):
    _, settings = coded_world

    def qcode(*args):
        return CliRunner().invoke(main, [*args, "--db", str(settings.db_path)])

    out = qcode("export", "qdpx", "--out", str(tmp_path / "round.qdpx"))
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"{tmp_path / 'round.qdpx'}: 2 interviews, 24 codes, ")
    out = qcode("export", "qdc", "--out", str(tmp_path / "codebook.qdc"))
    assert out.exit_code == 0 and out.output.strip() == f"{tmp_path / 'codebook.qdc'}: 24 codes (written)"
    passages = first_source_passages(tmp_path / "round.qdpx", settings)
    (_, s0, _), (_, _, e1) = passages[:2]
    corrected_copy(tmp_path / "round.qdpx", tmp_path / "team.qdpx", [(s0, e1, "LA04")])
    out = qcode("review", "import", str(tmp_path / "team.qdpx"))
    assert out.exit_code == 0, out.output
    assert "2 decisions applied" in out.output and "1 codings mapped to the passages they overlap" in out.output
