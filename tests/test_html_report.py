"""pipeline/html_report.py: the round's HTML pages, built from a real coded database and opened in a real browser.

The browser is headless Chromium (Debian's ``chromium`` package), driven over the DevTools protocol on
``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3 and 4), so no driver package is needed.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import query
from pipeline import review_steps, steps
from pipeline.html_report import COUNCIL_PAGE, INDEX_PAGE, RoundFacts, round_pages
from pipeline.schemas import Code, Codebook, CodedPassage

HOSTILE = '<script>document.title="pwned"</script><img src="http://example.invalid/x.png" onerror="alert(1)"> & co'


# what the database says ----------------------------------------------------------------------------------

ACTIVE = """
    SELECT p.passage_id, t.council FROM passages p
    JOIN transcripts t ON t.transcript_key = p.transcript_key AND t.version = p.version
    WHERE p.retired_at IS NULL"""

CODES_SHOWN = f"""
    WITH active AS ({ACTIVE}),
    coder AS (SELECT coder_id, codebook_version FROM coders WHERE activated_at IS NOT NULL
              ORDER BY activated_at DESC LIMIT 1),
    newest AS (SELECT passage_id, codes_after AS codes,
                      row_number() OVER (PARTITION BY passage_id ORDER BY decision_id DESC) AS n FROM review_decisions),
    shown AS (
        SELECT a.council, c.code_id FROM active a JOIN codings c USING (passage_id) JOIN coder USING (coder_id, codebook_version)
        WHERE c.applied AND a.passage_id NOT IN (SELECT passage_id FROM newest)
        UNION ALL
        SELECT a.council, unnest(n.codes) FROM active a JOIN newest n USING (passage_id) WHERE n.n = 1)
    SELECT council, code_id, count(*) FROM shown GROUP BY ALL"""


def db_codes_shown(settings) -> dict[tuple[str, str], int]:
    return {(council, code): n for council, code, n in query(settings, CODES_SHOWN)}


def db_review_progress(settings) -> dict[str, tuple[int, int]]:
    """{council: (passages, reviewed passages)} among active passages."""
    rows = query(settings, f"""WITH active AS ({ACTIVE})
        SELECT council, count(*), count(*) FILTER (WHERE passage_id IN (SELECT passage_id FROM review_decisions))
        FROM active GROUP BY council""")
    return {council: (n, reviewed) for council, n, reviewed in rows}


# reading the pages ---------------------------------------------------------------------------------------

class Tables(HTMLParser):
    """Every <table data-table=...> of a page as lists of cell texts, header row first."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._name = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._name = dict(attrs)["data-table"]
            self.tables[self._name] = []
        elif tag == "tr" and self._name:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._name].append(self._row)
            self._row = None
        elif tag == "table":
            self._name = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> dict[str, list[dict[str, str]]]:
    parser = Tables()
    parser.feed(page)
    return {name: [dict(zip(rows[0], row)) for row in rows[1:]] for name, rows in parser.tables.items()}


# a real browser ------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH: install the Debian package "
                                                             "'chromium' (apt-get install -y chromium) to run the browser test")

PAGE_FACTS = """JSON.stringify({
  title: document.title,
  scripts: document.querySelectorAll('script').length,
  images: document.querySelectorAll('img').length,
  charts: [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll('rect')].filter(r => r.getBoundingClientRect().width > 0).length;
    return {name: svg.dataset.chart, width: box.width, height: box.height, marks: marks,
            titles: [...svg.querySelectorAll('rect > title')].map(t => t.textContent)};
  }),
  passages: [...document.querySelectorAll('li.passage')].map(li => ({
    id: li.dataset.passage, text: li.querySelector('blockquote').textContent,
    reviewed: !!li.querySelector('.badge.reviewed')})),
  height: document.documentElement.scrollHeight
})"""


class Browser:
    """Headless Chromium over the DevTools pipe: open a page, collect console errors and requests, read the DOM."""

    def __init__(self, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # the DevTools pipe is fds 3 (commands in) and 4 (replies out) in the browser
            high_r, high_w = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
            os.dup2(to_browser_r, high_r)
            os.dup2(from_browser_w, high_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_pipes, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _read(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"chromium sent nothing over the DevTools pipe for {timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, method: str, session: str) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._read())

    def open(self, url: str, screenshot: Path) -> dict:
        """Load ``url``; its DOM facts, console errors, requests other than itself, and a full-page screenshot."""
        self.events = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                          "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        facts = json.loads(self.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True},
                                     session)["result"]["value"])
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": 1280, "height": facts["height"], "scale": 1}}, session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        pdf = self.send("Page.printToPDF", {}, session)
        mine = [e for e in self.events if e.get("sessionId") == session]
        facts["console_errors"] = (
            [e["params"]["args"] for e in mine if e.get("method") == "Runtime.consoleAPICalled"
             and e["params"]["type"] in ("error", "assert")]
            + [e["params"]["exceptionDetails"] for e in mine if e.get("method") == "Runtime.exceptionThrown"]
            + [e["params"]["entry"]["text"] for e in mine if e.get("method") == "Log.entryAdded"
               and e["params"]["entry"]["level"] == "error"])
        facts["requests"] = [e["params"]["request"]["url"] for e in mine
                             if e.get("method") == "Network.requestWillBeSent"]
        facts["pdf_bytes"] = len(base64.b64decode(pdf["data"]))
        self.send("Target.closeTarget", {"targetId": target})
        return facts

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path):
    chromium = Browser(tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


# a reviewed round ----------------------------------------------------------------------------------------

def review_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["passage_id", "codes", "reviewed"])
        writer.writerows([pid, codes, "yes"] for pid, codes in rows)
    return path


@pytest.fixture
def reviewed_world(coded_world, tmp_path):
    """The coded sample with reviews by two reviewers on Westmarch (three passages, two of them by both), one of
    which now reads as hostile markup, as if an interview had said it: (settings, the hostile passage's id)."""
    _, settings = coded_world
    westmarch = [pid for pid, council in query(settings, ACTIVE + " ORDER BY passage_id") if council == "Westmarch"]
    first, second, third = westmarch[:3]
    [(_, ana)] = review_steps.import_review_files(settings, [review_file(tmp_path / "ana.csv", [
        (first, "LA01"), (second, "LA02; BR01"), (third, "")])], reviewer="Ana")
    [(_, ben)] = review_steps.import_review_files(settings, [review_file(tmp_path / "ben.csv", [
        (first, "LA01"), (second, "LA02")])], reviewer="Ben")
    assert (ana.applied, ben.applied) == (3, 2)
    import duckdb

    con = duckdb.connect(str(settings.db_path))
    con.execute("UPDATE passages SET text = ? WHERE passage_id = ?", [HOSTILE, first])
    con.close()
    return settings, first


# tests ---------------------------------------------------------------------------------------------------

def test_qcode_run_writes_the_pages_and_rewrites_them_when_reviews_change(coded_world, tmp_path):
    _, settings = coded_world
    index = settings.out_dir / INDEX_PAGE
    progress = {row["council"]: row for row in tables_of(index.read_text(encoding="utf-8"))["review-progress"]}
    assert {c: (int(r["passages"]), int(r["reviewed"])) for c, r in progress.items()} == db_review_progress(settings)
    assert (settings.out_dir / "westmarch" / COUNCIL_PAGE).is_file()
    assert (settings.out_dir / "fenley" / COUNCIL_PAGE).is_file()

    westmarch = [pid for pid, council in query(settings, ACTIVE) if council == "Westmarch"]
    review_steps.import_review_files(settings, [review_file(tmp_path / "r.csv", [(westmarch[0], "BR02")])], reviewer="Ana")
    results = {e.path.relative_to(settings.out_dir).as_posix(): e.status
               for e in steps.write_round_reports(settings, steps.new_run_id())}
    assert results[INDEX_PAGE] == results[f"westmarch/{COUNCIL_PAGE}"] == "written"
    assert results[f"fenley/{COUNCIL_PAGE}"] == "unchanged"  # nothing about Fenley changed
    progress = {row["council"]: row for row in tables_of(index.read_text(encoding="utf-8"))["review-progress"]}
    assert progress["Westmarch"]["reviewed"] == "1"
    page = (settings.out_dir / "westmarch" / COUNCIL_PAGE).read_text(encoding="utf-8")
    assert f'data-passage="{westmarch[0]}"' in page and "model-vs-reviewers" in page


def test_qcode_report_command_writes_the_pages_and_says_so(coded_world, tmp_path):
    from pipeline.cli import main

    _, settings = coded_world
    out = tmp_path / "html"
    args = ["report", "--db", str(settings.db_path), "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.output.strip().splitlines()[-1] == f"3 pages (3 written, 0 unchanged); open {out / 'index.html'}"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")) == [
        f"fenley/{COUNCIL_PAGE}", INDEX_PAGE, f"westmarch/{COUNCIL_PAGE}"]
    again = CliRunner().invoke(main, args)
    assert again.output.strip().splitlines()[-1].startswith("3 pages (0 written, 3 unchanged)")
    missing = CliRunner().invoke(main, ["report", "--db", str(tmp_path / "none.duckdb"), "--out", str(out)])
    assert missing.exit_code == 1 and "run 'qcode run ROUND_DIR' first" in missing.output


def test_every_value_is_escaped_and_nothing_points_outside_the_page():
    book = Codebook("book <b>", "v1", (Code("LA01", "leadership action", 'Vision & "values"', "d", "<area>"),))
    passage = CodedPassage("p<1>", "Council <i>x</i>", "INT-<1>", HOSTILE, respondent_role="<role>",
                           question="<b>Why?</b>", scores={"LA01": 0.9}, applied=("LA01",))
    facts = RoundFacts("zero-shot:<c>", "zero-shot", "model <m>", "book <b>", "v1", "2026-12-02 03:00 UTC")
    pages = round_pages([passage], book, facts, {}, {"Council <i>x</i>": ["review.csv"]})
    assert set(pages) == {INDEX_PAGE, f"council-i-x-i/{COUNCIL_PAGE}"}
    for page in pages.values():
        assert "<script" not in page and "<img" not in page and "<b>" not in page and "<i>" not in page
        links = re.findall(r'(?:src|href)="([^"]*)"', page)
        assert links and not [link for link in links if ":" in link or link.startswith("/")]  # relative links only
        # no attribute names an address but the SVG namespace, which is a name, never fetched; no CSS url()
        assert re.findall(r'\s([\w-]+)="([A-Za-z][\w+.-]*:[^"]*)"', page) == \
            [("xmlns", "http://www.w3.org/2000/svg")] * page.count("<svg")
        assert "url(" not in page and "@import" not in page
    council = pages[f"council-i-x-i/{COUNCIL_PAGE}"]
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in council
    assert "&lt;b&gt;Why?&lt;/b&gt;" in council and "Vision &amp; &quot;values&quot;" in council


@needs_chromium
def test_pages_in_a_real_browser(reviewed_world, browser, tmp_path):
    settings, hostile = reviewed_world
    steps.write_html_report(settings)
    codes = db_codes_shown(settings)
    progress = db_review_progress(settings)
    pages = {"index": settings.out_dir / INDEX_PAGE, "westmarch": settings.out_dir / "westmarch" / COUNCIL_PAGE}
    seen = {name: browser.open(path.as_uri(), tmp_path / f"{name}.png") for name, path in pages.items()}

    for name, facts in seen.items():
        assert facts["console_errors"] == [], name
        assert facts["requests"] == [pages[name].as_uri()], name  # the page itself, nothing else
        assert facts["scripts"] == facts["images"] == 0
        assert facts["charts"] and all(c["width"] > 100 and c["height"] > 20 and c["marks"] > 0
                                       for c in facts["charts"]), facts["charts"]
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert facts["pdf_bytes"] > 10_000  # it prints
    assert {c["name"] for c in seen["index"]["charts"]} == {"councils-by-code", "codes-by-area", "review-progress"}
    assert {c["name"] for c in seen["westmarch"]["charts"]} == {"codes-by-area", "review-counts"}

    # the heat map's cells, as drawn, are the database's counts
    [heat] = [c for c in seen["index"]["charts"] if c["name"] == "councils-by-code"]
    drawn = {}
    for title in heat["titles"]:
        council, code, n = re.fullmatch(r"(.+), (\w+): (\d+)", title).groups()
        drawn[(council, code)] = int(n)
    assert {k: v for k, v in drawn.items() if v} == codes

    index_tables = tables_of(pages["index"].read_text(encoding="utf-8"))
    assert {r["council"]: (int(r["passages"]), int(r["reviewed"])) for r in index_tables["review-progress"]} == progress
    for row in index_tables["councils-by-code"][:-1]:
        assert {code: int(n) for code, n in row.items() if code != "council" and int(n)} == \
            {code: n for (council, code), n in codes.items() if council == row["council"]}

    westmarch = tables_of(pages["westmarch"].read_text(encoding="utf-8"))
    assert {r["code"]: int(r["passages"]) for r in westmarch["codes-by-area"] if int(r["passages"])} == \
        {code: n for (council, code), n in codes.items() if council == "Westmarch"}
    [total] = [r for r in westmarch["review-counts"] if r["interview"] == "all interviews"]
    assert (int(total["passages"]), int(total["reviewed"])) == progress["Westmarch"] == (progress["Westmarch"][0], 3)
    assert int(total["model only"]) == progress["Westmarch"][0] - 3
    [pair] = westmarch["reviewer-pairs"]
    assert (pair["reviewers"], pair["passages both coded"], pair["disagreements"]) == ("Ana and Ben", "2", "1")
    assert westmarch["model-vs-reviewers"]

    # the hostile passage is shown as the text it is, first under its code and marked reviewed
    [shown] = [p for p in seen["westmarch"]["passages"] if p["id"] == hostile]
    assert shown["text"] == HOSTILE and shown["reviewed"]
    assert seen["westmarch"]["title"] == "Westmarch: qcode council report"
