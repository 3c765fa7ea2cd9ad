"""pipeline/anonymise.py: what the gate redacts, what it must leave alone, and what it reports."""

from __future__ import annotations

import pytest

from pipeline.anonymise import (ADDRESS, DATE_OF_BIRTH, EMAIL, KINDS, NI_NUMBER, PERSON, PHONE, POSTCODE,
                                Anonymiser)
from pipeline.ingest import read_known_names

KNOWN = ["Helen Marsh", "Tom Ridley", "Hope Watts", "Sian Llewellyn-Jones"]


@pytest.fixture(scope="module")
def gate() -> Anonymiser:
    return Anonymiser(known_names=KNOWN)


@pytest.mark.parametrize("text, expected", [
    ("Mail me at helen.marsh@westmarch.gov.uk please.", "Mail me at [EMAIL] please."),
    ("Or j_o+news@example.co.uk, anytime", "Or [EMAIL], anytime"),
])
def test_email(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {EMAIL: 1}


@pytest.mark.parametrize("raw", [
    "+44 7700 900123",
    "+447700900123",
    "+44 20 7946 0958",
    "+44-20-7946-0958",
    "+44 (0)20 7946 0958",
    "07700 900123",
    "01632 960123",
    "0161 496 0000",
    "020 7946 0958",
    "(01632) 960 123",
])
def test_phone_numbers(gate, raw):
    redacted, counts = gate.redact(f"Ring me on {raw} tomorrow.")
    assert redacted == "Ring me on [PHONE] tomorrow."
    assert counts == {PHONE: 1}


@pytest.mark.parametrize("raw", ["WS1 4AB", "SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN551PT"])
def test_postcodes(gate, raw):
    redacted, counts = gate.redact(f"The office at {raw} closed.")
    assert redacted == "The office at [POSTCODE] closed."
    assert counts == {POSTCODE: 1}


@pytest.mark.parametrize("text, expected", [
    ("Mr Okafor agreed.", "Mr [PERSON] agreed."),
    ("Mr. Okafor agreed.", "Mr. [PERSON] agreed."),
    ("Mrs Dunn agreed.", "Mrs [PERSON] agreed."),
    ("Ms Patel agreed.", "Ms [PERSON] agreed."),
    ("Dr Amir Khan agreed.", "Dr [PERSON] agreed."),
    ("Cllr Jo Bell agreed.", "Cllr [PERSON] agreed."),
    ("Councillor Brennan agreed.", "Councillor [PERSON] agreed."),
    ("and then councillor Brennan agreed.", "and then councillor [PERSON] agreed."),
])
def test_titled_names_keep_the_title(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {PERSON: 1}


@pytest.mark.parametrize("text, expected", [
    ("I spoke to Helen Marsh.", "I spoke to [PERSON]."),
    ("I spoke to helen marsh.", "I spoke to [PERSON]."),
    ("I spoke to HELEN MARSH.", "I spoke to [PERSON]."),
    ("Thanks, Helen.", "Thanks, [PERSON]."),
    ("Ridley said no.", "[PERSON] said no."),
    ("Ask Tom.", "Ask [PERSON]."),
    ("Sian Llewellyn-Jones chaired it.", "[PERSON] chaired it."),
])
def test_known_names(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {PERSON: 1}


def test_known_name_with_title_is_one_redaction(gate):
    redacted, counts = gate.redact("Cllr Tom Ridley chaired it.")
    assert redacted == "Cllr [PERSON] chaired it."
    assert counts == {PERSON: 1}


@pytest.mark.parametrize("text", [
    "In 2019 we spent £1,200,000, about 2,500 hours, and saved 15% by 2024.",
    "Between 2010 and 2020 the budget fell from £45m to £30.5m.",
    "When I was a councillor I pushed for it, and as councillor I still do.",
    "Codes LA01 and BR03 came up, and LA15 too.",
    "The Council Leader and the Chief Executive met the Cabinet on Monday in March.",
    "We hope so. There is hope, and we watts the point.",
    "we hope so",
    "Meeting 1,234,567 people over 10 years, ref 12345678.",
])
def test_false_positives_are_left_alone(gate, text):
    redacted, counts = gate.redact(text)
    assert redacted == text
    assert sum(counts.values()) == 0


def test_without_known_names_only_patterns_are_redacted():
    gate = Anonymiser()
    redacted, counts = gate.redact("Helen said Dr Marsh is at WS1 4AB.")
    assert redacted == "Helen said Dr [PERSON] is at [POSTCODE]."
    assert counts == {PERSON: 1, POSTCODE: 1}


def test_counts_per_kind_and_raw_values_never_survive(gate):
    raw_values = ["helen.marsh@westmarch.gov.uk", "07700 900123", "+44 20 7946 0958", "WS1 4AB",
                  "Helen Marsh", "Okafor", "Tom", "Jo Bell"]
    text = ("Helen Marsh (helen.marsh@westmarch.gov.uk, 07700 900123 or +44 20 7946 0958) "
            "met Mr Okafor at WS1 4AB. Tom came too, with Cllr Jo Bell, in 2019 about LA01.")
    redacted, counts = gate.redact(text)
    assert redacted == ("[PERSON] ([EMAIL], [PHONE] or [PHONE]) met Mr [PERSON] at [POSTCODE]. "
                        "[PERSON] came too, with Cllr [PERSON], in 2019 about LA01.")
    assert dict(counts) == {PERSON: 4, EMAIL: 1, PHONE: 2, POSTCODE: 1}
    for value in raw_values:
        assert value not in redacted
        assert value.lower() not in redacted.lower()


def test_find_returns_sorted_non_overlapping_spans(gate):
    text = "Dr Helen Marsh, helen.marsh@x.org, WS1 4AB"
    spans = gate.find(text)
    assert [(text[s.start:s.end], s.kind) for s in spans] == [
        ("Helen Marsh", PERSON), ("helen.marsh@x.org", EMAIL), ("WS1 4AB", POSTCODE)]
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_known_names_read_from_a_round_file(tmp_path):
    (tmp_path / "known_names.txt").write_text("# names\n\nPriya Chandran\n", encoding="utf-8")
    gate = Anonymiser(read_known_names(tmp_path))
    assert gate.redact("Priya said priya chandran and Chandran agreed.") == (
        "[PERSON] said [PERSON] and [PERSON] agreed.", {PERSON: 3})


def test_redacting_clean_text_returns_it_unchanged(gate):
    text = "We pooled the budgets with health. It took a year, and it worked."
    assert gate.redact(text) == (text, {})


# --- What the gate missed before the detection engine was rebuilt (issue: anonymisation gate). ---

@pytest.mark.parametrize("text, expected", [
    ("Mr McAllister agreed.", "Mr [PERSON] agreed."),
    ("Mr Will Hargreaves agreed.", "Mr [PERSON] agreed."),
    ("Mrs May Fotheringay agreed.", "Mrs [PERSON] agreed."),
    ("Cllr J Braithwaite agreed.", "Cllr [PERSON] agreed."),
    ("Cllr J. R. Braithwaite agreed.", "Cllr [PERSON] agreed."),
    ("DR ORLA KINSELLA AGREED.", "DR [PERSON] AGREED."),
    ("Dr\u00a0Fenwick agreed.", "Dr\u00a0[PERSON] agreed."),
    ("Dr  Fenwick agreed.", "Dr  [PERSON] agreed."),
    ("Dr van der Merwe agreed.", "Dr [PERSON] agreed."),
    ("Cllr Smith-Hollingworth agreed.", "Cllr [PERSON] agreed."),
    ("Cllr Smith\u2011Hollingworth agreed.", "Cllr [PERSON] agreed."),
    ("Mr O\u2019Brien agreed.", "Mr [PERSON] agreed."),
    ("Prof Siân Ní Bhriain agreed.", "Prof [PERSON] agreed."),
])
def test_titled_names_missed_before(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {PERSON: 1}


@pytest.mark.parametrize("known, text, expected", [
    (["Aoife O'Rourke"], "Then O\u2019Rourke said no.", "Then [PERSON] said no."),
    (["Aoife O\u2019Rourke"], "Then O'Rourke said no.", "Then [PERSON] said no."),
    (["Aoife O'Rourke"], "I spoke to aoife o\u2019rourke.", "I spoke to [PERSON]."),
    (["Siân Evans"], "I told sian about it.", "I told [PERSON] about it."),
    (["Siân Evans"], "I told Sian about it.", "I told [PERSON] about it."),
    (["Siân Evans"], "I told Sia\u0302n about it.", "I told [PERSON] about it."),
    (["Sian Evans"], "I told Siân about it.", "I told [PERSON] about it."),
    (["José Ortega"], "Jose was there.", "[PERSON] was there."),
    (["José Ortega"], "JOSE ORTEGA was there.", "[PERSON] was there."),
    (["helen marsh"], "Helen was there.", "[PERSON] was there."),
    (["Helen Marsh"], "Helen\u00a0Marsh was there.", "[PERSON] was there."),
    (["Helen Marsh"], "Helen  Marsh was there.", "[PERSON] was there."),
])
def test_known_names_in_other_spellings(known, text, expected):
    redacted, counts = Anonymiser(known_names=known).redact(text)
    assert redacted == expected
    assert counts == {PERSON: 1}


@pytest.mark.parametrize("text, expected", [
    ("I spoke to Sarah Jones about it.", "I spoke to [PERSON] about it."),
    ("We asked Priya Raman and she agreed.", "We asked [PERSON] and she agreed."),
])
def test_untitled_names_found_by_the_ner_model(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {PERSON: 1}


@pytest.mark.parametrize("raw", ["m14 5tq", "cf103at", "Sw1a 2Aa", "SW1A\u00a02AA", "ws1  4ab"])
def test_postcodes_in_any_case_and_spacing(gate, raw):
    redacted, counts = gate.redact(f"The office at {raw} closed.")
    assert redacted == "The office at [POSTCODE] closed."
    assert counts == {POSTCODE: 1}


@pytest.mark.parametrize("raw", ["0044 7700 900321", "07700.900.654", "0044 (0)20 7946 0958", "07700\u00a0900123"])
def test_phone_numbers_missed_before(gate, raw):
    redacted, counts = gate.redact(f"Ring me on {raw} tomorrow.")
    assert redacted == "Ring me on [PHONE] tomorrow."
    assert counts == {PHONE: 1}


@pytest.mark.parametrize("text, expected", [
    ("Write to fergus.o'hare@example.com today.", "Write to [EMAIL] today."),
    ("Write to fergus.o\u2019hare@example.com today.", "Write to [EMAIL] today."),
    ("Write to x dot y at gmail dot com today.", "Write to [EMAIL] today."),
    ("Write to jo.bell at westmarch dot gov dot uk today.", "Write to [EMAIL] today."),
    ("Write to jo [at] example [dot] org today.", "Write to [EMAIL] today."),
])
def test_email_forms_missed_before(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {EMAIL: 1}


@pytest.mark.parametrize("raw", ["QQ 12 34 56 C", "AB123456D", "ab 12 34 56 d", "JG 10 37 65 A", "AB-12-34-56-C"])
def test_national_insurance_numbers(gate, raw):
    redacted, counts = gate.redact(f"My NI number is {raw}, I think.")
    assert redacted == "My NI number is [NI_NUMBER], I think."
    assert counts == {NI_NUMBER: 1}


@pytest.mark.parametrize("raw", [
    "DA123456A",   # D is never a first letter
    "AO123456A",   # O is never a second letter
    "GB123456A",   # GB, BG, NK, KN, TN, NT and ZZ are never used
    "AB123456E",   # the suffix is A, B, C or D
    "AB1234567",
])
def test_invalid_national_insurance_numbers_are_left_alone(gate, raw):
    text = f"Reference {raw} is on file."
    assert gate.redact(text) == (text, {})


@pytest.mark.parametrize("text, expected", [
    ("She was born on 3 March 1961 in Leeds.", "She was born on [DATE_OF_BIRTH] in Leeds."),
    ("DOB: 03/03/1961.", "DOB: [DATE_OF_BIRTH]."),
    ("d.o.b. 3.3.61", "d.o.b. [DATE_OF_BIRTH]"),
    ("His date of birth 1961-03-03 was wrong.", "His date of birth [DATE_OF_BIRTH] was wrong."),
    ("I was born 3rd of March, 1961.", "I was born [DATE_OF_BIRTH]."),
    ("I was born on March 3rd 1961.", "I was born on [DATE_OF_BIRTH]."),
    ("My birthday is the 3rd of March.", "My birthday is the [DATE_OF_BIRTH]."),
])
def test_dates_of_birth(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {DATE_OF_BIRTH: 1}


@pytest.mark.parametrize("text", [
    "We met on 3 March 2019 and again in March 2019.",
    "The interview was on 03/03/2024, the report due 2024-04-01.",
    "date: 2026-03-17",
    "The service was born out of the 2010 cuts; on 3 March 2011 it opened.",
])
def test_dates_without_birth_context_are_left_alone(gate, text):
    assert gate.redact(text) == (text, {})


@pytest.mark.parametrize("text, expected", [
    ("She lives at 14 Acacia Avenue now.", "She lives at [ADDRESS] now."),
    ("Send it to Flat 2, 33 Mill Lane please.", "Send it to [ADDRESS] please."),
    ("He lived at 221b Baker Street.", "He lived at [ADDRESS]."),
    ("Office at 7 St John's Road, by the park.", "Office at [ADDRESS], by the park."),
    ("at 12 HIGH STREET then", "at [ADDRESS] then"),
])
def test_street_addresses(gate, text, expected):
    redacted, counts = gate.redact(text)
    assert redacted == expected
    assert counts == {ADDRESS: 1}


@pytest.mark.parametrize("text", [
    "We held 3 council meetings and 2 public ones.",
    "It took 3 years, 12 Labour councillors and 4 new roads.",
    "In 2019 Station Road was closed for a year.",
    "Page 14 of the report and section 3 of the plan.",
])
def test_numbers_that_are_not_addresses_are_left_alone(gate, text):
    assert gate.redact(text) == (text, {})


def test_new_kinds_are_listed():
    assert {PERSON, EMAIL, PHONE, POSTCODE, NI_NUMBER, DATE_OF_BIRTH, ADDRESS} <= set(KINDS)


def test_allow_list_is_never_redacted():
    text = "Calderbridge Council and Cllr Fenley agreed with Sarah Jones."
    plain = Anonymiser()
    allowed = Anonymiser(allow=["Calderbridge", "Fenley", "Sarah Jones"])
    assert allowed.redact(text) == (text, {})
    assert "Fenley" not in plain.redact(text)[0]


def test_spans_are_offsets_into_the_original_text(gate):
    text = "ﬁne: Dr\u00a0Siâ\u0302n  O\u2019Rourke, m14 5tq, 0044 7700 900321, x dot y at gmail dot com."
    spans = gate.find(text)
    assert [(text[s.start:s.end], s.kind) for s in spans] == [
        ("Siâ\u0302n  O\u2019Rourke", PERSON), ("m14 5tq", POSTCODE), ("0044 7700 900321", PHONE),
        ("x dot y at gmail dot com", EMAIL)]


@pytest.mark.parametrize("text", [
    "Where do I start? The internal ones first. Silos, mostly.",
    "So we had the Pledge, and a climate plan.",
    "Our social workers had worked in Rotterdam for a couple of years.",
    "R: [pause] Badly, at first. Then better.",
    "The Chief Executive and the Leader met the Cabinet.",
    "The IT people and HR set it up on MS Teams.",
])
def test_the_ner_model_leaves_common_capitalised_words_alone(gate, text):
    assert gate.redact(text) == (text, {})


def test_the_ner_model_is_loaded_once():
    from pipeline.ner_model import load_ner

    assert Anonymiser().nlp is Anonymiser(known_names=["Jo Bell"]).nlp is load_ner()


def test_a_changed_model_file_is_refused_with_its_name(tmp_path):
    from pipeline.errors import QcodeError
    from pipeline.ner_model import NerModelError, read_manifest, verify

    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "model").write_bytes(b"weights")
    (tmp_path / "config.cfg").write_text("[nlp]\n", encoding="utf-8")
    manifest = {"ner/model": "0" * 64, "config.cfg": __import__("hashlib").sha256(b"[nlp]\n").hexdigest()}
    with pytest.raises(NerModelError, match=r"ner/model .*has sha256 .*not the recorded"):
        verify(tmp_path, manifest)
    assert issubclass(NerModelError, QcodeError)

    manifest["ner/model"] = __import__("hashlib").sha256(b"weights").hexdigest()
    verify(tmp_path, manifest)
    (tmp_path / "extra.bin").write_bytes(b"?")
    with pytest.raises(NerModelError, match="extra.bin"):
        verify(tmp_path, manifest)
    (tmp_path / "extra.bin").unlink()
    (tmp_path / "config.cfg").unlink()
    with pytest.raises(NerModelError, match="config.cfg is missing"):
        verify(tmp_path, manifest)
    assert len(read_manifest()) > 20  # the recorded manifest covers every file of the installed pipeline


def test_the_installed_model_matches_the_recorded_hashes():
    from pipeline.ner_model import model_dir, read_manifest, verify

    verify(model_dir(), read_manifest())


def test_a_word_of_a_capitalised_title_is_not_a_name(gate):
    text = 'There was a Facebook group, "Fenley Says No To Smelly Bins", I think.'
    assert gate.redact(text) == (text, {})


@pytest.mark.parametrize("text, expected", [
    ("My sister moved to Manchester last year.", "My sister moved to Manchester last year."),
    ("She came back from Rotterdam full of ideas.", "She came back from Rotterdam full of ideas."),
    ("I spoke to Sarah yesterday.", "I spoke to [PERSON] yesterday."),
])
def test_a_place_after_a_verb_of_moving_is_not_a_name(gate, text, expected):
    assert gate.redact(text)[0] == expected
