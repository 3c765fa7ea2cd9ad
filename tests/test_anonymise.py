"""pipeline/anonymise.py: what the gate redacts, what it must leave alone, and what it reports."""

from __future__ import annotations

import pytest

from pipeline.anonymise import EMAIL, PERSON, PHONE, POSTCODE, Anonymiser
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
