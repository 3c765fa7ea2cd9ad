"""The round as pages to look at: ``reports/index.html`` and ``reports/<council>/report.html``.

Each page is one self-contained file: its styles inline, its charts inline SVG, no script, font, image or any
other address to fetch (a Content-Security-Policy forbids them too), so it opens from disk in any browser,
offline, and prints. Every chart has its numbers in a table beside it, for screen readers and for copying.
Only what the database holds is shown (anonymised text), and every value from it is HTML-escaped.

The figures come from where the CSV reports get theirs: ``summarise.council_summary`` and
``summarise.councils_by_code`` for counts, ``agreement.agreement_figures`` for agreement.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from datetime import timezone
from importlib import resources
from pathlib import Path
from string import Template

from pipeline.agreement import agreement_figures
from pipeline.report import ExportResult, RememberExport, WrittenByQcode, write_export
from pipeline.schemas import Codebook, CodedPassage, slugify
from pipeline.store import Store
from pipeline.summarise import council_summary, councils_by_code, strongest_passages

INDEX_PAGE = "index.html"
COUNCIL_PAGE = "report.html"
LAYOUT_VERSION = 1
"""Raise when the pages change, so the next run rewrites them even though the data did not change."""
PASSAGES_PER_CODE = 3
"""Strongest passages shown per code on a council's page (reviewed ones first)."""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
$style
</style>
</head>
<body>
<header>
<nav>$nav</nav>
<h1>$title</h1>
$facts
</header>
<main>
$body
</main>
<footer>Written by qcode from $source. Codes are the reviewers' where a passage was reviewed, otherwise the model's.
</footer>
</body>
</html>
""")


@dataclass(frozen=True)
class RoundFacts:
    """Who coded the round and when: the page header of every page."""

    coder_id: str
    coder_kind: str
    model_id: str
    codebook_name: str
    codebook_version: str
    run_started: str
    """The newest run's start, ``YYYY-MM-DD HH:MM UTC``, or empty before any run."""


def esc(value) -> str:
    """Text safe inside an HTML element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _style() -> str:
    return resources.files("pipeline").joinpath("html_report.css").read_text(encoding="utf-8")


# charts ------------------------------------------------------------------------------------------------

BAR_WIDTH = 360
ROW_HEIGHT = 22
LABEL_WIDTH = 70


def _svg(width: int, height: int, title: str, parts: list[str], chart: str) -> str:
    return (f'<svg class="chart" data-chart="{esc(chart)}" role="img" aria-label="{esc(title)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{esc(title)}</title>{"".join(parts)}</svg>')


def bar_chart(groups: list[tuple[str, list[tuple[str, int]]]], title: str, chart: str) -> str:
    """Horizontal bars, one per (label, value), under a heading per group (a framework area)."""
    top = max((v for _, bars in groups for _, v in bars), default=0) or 1
    parts, y = [], 0
    for group, bars in groups:
        parts.append(f'<text class="group" x="0" y="{y + 15}">{esc(group)}</text>')
        y += ROW_HEIGHT
        for label, value in bars:
            width = round(BAR_WIDTH * value / top)
            parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
                         f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 4}" width="{width}" height="{ROW_HEIGHT - 8}">'
                         f'<title>{esc(label)}: {value}</title></rect>'
                         f'<text x="{LABEL_WIDTH + width + 4}" y="{y + 15}">{value}</text>')
            y += ROW_HEIGHT
    return _svg(LABEL_WIDTH + BAR_WIDTH + 40, y + 4, title, parts, chart)


def stacked_bars(rows: list[tuple[str, int, int]], title: str, chart: str, label_width: int = 150) -> str:
    """One bar per (label, reviewed, model only): the reviewed part dark, the model-only part light."""
    top = max((a + b for _, a, b in rows), default=0) or 1
    parts = [f'<rect class="reviewed" x="{label_width}" y="2" width="12" height="12"/>'
             f'<text x="{label_width + 16}" y="13">reviewed</text>'
             f'<rect class="model" x="{label_width + 100}" y="2" width="12" height="12"/>'
             f'<text x="{label_width + 116}" y="13">model only</text>']
    y = ROW_HEIGHT
    for label, reviewed, model in rows:
        done = round(BAR_WIDTH * reviewed / top)
        rest = round(BAR_WIDTH * model / top)
        parts.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
                     f'<rect class="reviewed" x="{label_width}" y="{y + 4}" width="{done}" height="{ROW_HEIGHT - 8}">'
                     f'<title>{esc(label)}: {reviewed} reviewed</title></rect>'
                     f'<rect class="model" x="{label_width + done}" y="{y + 4}" width="{rest}" height="{ROW_HEIGHT - 8}">'
                     f'<title>{esc(label)}: {model} model only</title></rect>'
                     f'<text x="{label_width + done + rest + 4}" y="{y + 15}">{reviewed} / {reviewed + model}</text>')
        y += ROW_HEIGHT
    return _svg(label_width + BAR_WIDTH + 80, y + 4, title, parts, chart)


def heat_map(councils: list[str], code_ids: list[str], counts: list[list[int]], title: str, chart: str) -> str:
    """Councils (rows) by codes (columns), each cell shaded by its count and showing it."""
    cell, left, head = 30, 130, 44
    top = max((v for row in counts for v in row), default=0) or 1
    parts = [f'<text class="code" transform="translate({left + j * cell + cell // 2 + 4},{head - 4}) rotate(-60)">'
             f'{esc(code)}</text>' for j, code in enumerate(code_ids)]
    for i, (council, row) in enumerate(zip(councils, counts)):
        y = head + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell // 2 + 5}" text-anchor="end">{esc(council)}</text>')
        for j, value in enumerate(row):
            x = left + j * cell
            shade = f"{0.08 + 0.92 * value / top:.2f}" if value else "0"
            parts.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill-opacity="{shade}"><title>{esc(council)}, {esc(code_ids[j])}: {value}</title></rect>'
                         f'<text class="{"dark" if value > top / 2 else "count"}" x="{x + cell // 2 - 1}" '
                         f'y="{y + cell // 2 + 4}" text-anchor="middle">{value or ""}</text>')
    return _svg(left + len(code_ids) * cell + 4, head + len(councils) * cell + 4, title, parts, chart)


def table(columns: list[str], rows: list[list], caption: str, name: str, links: dict[str, str] | None = None) -> str:
    """A plain table of the figures a chart shows; ``links`` turns a first-column value into a link."""
    links = links or {}
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    body = []
    for row in rows:
        first = esc(row[0])
        if row[0] in links:
            first = f'<a href="{esc(links[row[0]])}">{first}</a>'
        cells = "".join(f'<td class="{"num" if isinstance(v, (int, float)) else "text"}">{esc(_number(v))}</td>'
                        for v in row[1:])
        body.append(f'<tr><th scope="row">{first}</th>{cells}</tr>')
    return (f'<div class="numbers"><table data-table="{esc(name)}"><caption>{esc(caption)}</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _number(value) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def _figure(chart: str, numbers: str) -> str:
    return f'<div class="figure">{chart}{numbers}</div>'


# figures -----------------------------------------------------------------------------------------------

def _by_council(passages: list[CodedPassage]) -> dict[str, list[CodedPassage]]:
    grouped: dict[str, list[CodedPassage]] = defaultdict(list)
    for p in passages:
        grouped[p.council].append(p)
    return dict(sorted(grouped.items()))


def _review_counts(passages: list[CodedPassage]) -> tuple[int, int]:
    """(reviewed, model only) passages."""
    reviewed = sum(1 for p in passages if p.gold is not None)
    return reviewed, len(passages) - reviewed


def _codes_by_area(summary: list[dict]) -> list[tuple[str, list[dict]]]:
    """council_summary's rows (already in framework-area order) grouped by framework area."""
    groups: dict[str, list[dict]] = {}
    for row in summary:
        groups.setdefault(row["framework_area"], []).append(row)
    return list(groups.items())


def _codes_section(summary: list[dict], heading: str, chart: str) -> str:
    groups = _codes_by_area(summary)
    svg = bar_chart([(area, [(r["code_id"], r["passages"]) for r in rows]) for area, rows in groups],
                    f"{heading}: passages per code, grouped by framework area", chart)
    numbers = table(["framework area", "code", "label", "passages", "interviews", "share of coded passages"],
                    [[r["framework_area"], r["code_id"], r["label"], r["passages"], r["interviews"],
                      r["share_of_coded_passages"]] for r in summary], f"{heading}: passages per code", chart)
    return f'<section id="codes"><h2>{esc(heading)}</h2>{_figure(svg, numbers)}</section>'


def _passage(p: CodedPassage, code_id: str) -> str:
    if p.gold is not None:
        badge = '<span class="badge reviewed">reviewed</span>'
    else:
        badge = f'<span class="badge model">model, score {p.scores.get(code_id, 0.0):.2f}</span>'
    question = f'<p class="question"><span>Question:</span> {esc(p.question)}</p>' if p.question else ""
    meta = " · ".join(esc(v) for v in (p.interview_id, p.respondent_role) if v)
    return (f'<li class="passage" data-passage="{esc(p.passage_id)}">{question}'
            f'<blockquote>{esc(p.text)}</blockquote><p class="meta">{badge} {meta}</p></li>')


def _passages_section(passages: list[CodedPassage], summary: list[dict]) -> str:
    parts = []
    for area, rows in _codes_by_area(summary):
        coded = [r for r in rows if r["passages"]]
        if not coded:
            continue
        parts.append(f"<h3>{esc(area)}</h3>")
        for r in coded:
            shown = strongest_passages(passages, r["code_id"], PASSAGES_PER_CODE)
            parts.append(f'<article class="code" id="code-{esc(r["code_id"])}"><h4>{esc(r["code_id"])} '
                         f'{esc(r["label"])} <small>({r["passages"]} passages; the strongest {len(shown)})</small></h4>'
                         f'<ol>{"".join(_passage(p, r["code_id"]) for p in shown)}</ol></article>')
    if not parts:
        parts.append("<p>No passage of this council is coded.</p>")
    return f'<section id="passages"><h2>Passages by code</h2>{"".join(parts)}</section>'


def _agreement_section(report: dict, codebook: Codebook) -> str:
    model = report["model_vs_reviewers"]
    if not model and not report["reviewer_pairs"]:
        return ""
    labels = {c.id: c.label for c in codebook.codes}
    parts = ['<section id="agreement"><h2>Agreement</h2>']
    if model:
        parts.append(f'<p>Model against reviewers on {report["reviewed_passages"]} reviewed passages: '
                     f'micro F1 <strong>{_number(model["micro_f1"])}</strong>, macro F1 '
                     f'<strong>{_number(model["macro_f1"])}</strong>. Krippendorff\'s alpha: '
                     f'&ge; 0.8 reliable, &ge; 0.667 tentative.</p>')
        rows = [[r["code_id"], labels.get(r["code_id"], ""), r["support"], r["support_other"], r["precision"],
                 r["recall"], r["f1"], r["kappa"], r["alpha"], r["alpha_reading"]]
                for r in model["per_code"] if r["support"] or r["support_other"]]
        parts.append(table(["code", "label", "reviewers", "model", "precision", "recall", "F1", "kappa", "alpha",
                            "reading"], rows, "Model against reviewers, per code", "model-vs-reviewers"))
    if report["reviewer_pairs"]:
        rows = [[f'{pair["reviewer_a"]} and {pair["reviewer_b"]}', pair["passages"], len(pair["disagreements"]),
                 pair["micro_f1"], pair["macro_f1"]] for pair in report["reviewer_pairs"]]
        parts.append(table(["reviewers", "passages both coded", "disagreements", "micro F1", "macro F1"], rows,
                           "Reviewer against reviewer", "reviewer-pairs"))
    parts.append("</section>")
    return "".join(parts)


def _facts(facts: RoundFacts, extra: list[tuple[str, str]]) -> str:
    items = [*extra,
             ("coder", f"{facts.coder_id} ({facts.coder_kind})"),
             ("embedding model", facts.model_id),
             ("codebook", f"{facts.codebook_name} version {facts.codebook_version}"),
             ("run started", facts.run_started or "no run recorded")]
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def _page(title: str, nav: str, facts: str, body: str) -> str:
    return PAGE.substitute(title=esc(title), nav=nav, facts=facts, body=body, style=_style(),
                           source="the anonymised text in qcode's database")


# pages -------------------------------------------------------------------------------------------------

def index_page(passages: list[CodedPassage], codebook: Codebook, facts: RoundFacts) -> str:
    """The round: councils x codes heat map, codes by framework area, review progress per council."""
    councils = _by_council(passages)
    links = {c: f"{slugify(c)}/{COUNCIL_PAGE}" for c in councils}
    header, rows = councils_by_code(passages, codebook)
    matrix, councils_with_code = rows[:-1], rows[-1]
    heat = heat_map([r[0] for r in matrix], header[1:], [r[1:] for r in matrix],
                    "Councils by code: number of passages", "councils-by-code")
    heat_numbers = table(header, [*matrix, councils_with_code], "Councils by code: number of passages",
                         "councils-by-code", links)
    progress = [(c, *_review_counts(ps)) for c, ps in councils.items()]
    progress_chart = stacked_bars(progress, "Review progress per council", "review-progress")
    progress_numbers = table(["council", "passages", "reviewed", "model only", "share reviewed"],
                             [[c, a + b, a, b, round(a / (a + b), 3) if a + b else 0.0] for c, a, b in progress],
                             "Review progress per council", "review-progress", links)
    reviewed, model_only = _review_counts(passages)
    rounds = ", ".join(sorted({p.round for p in passages if p.round})) or "not named"
    body = (f'<section id="heat-map"><h2>Councils by code</h2>{_figure(heat, heat_numbers)}</section>'
            f'{_codes_section(council_summary(passages, codebook), "Codes by framework area", "codes-by-area")}'
            f'<section id="review"><h2>Review progress</h2>{_figure(progress_chart, progress_numbers)}</section>'
            '<section id="councils"><h2>Councils</h2><ul>'
            + "".join(f'<li><a href="{esc(links[c])}">{esc(c)}</a></li>' for c in councils) + "</ul></section>")
    return _page("qcode round report", "", _facts(facts, [
        ("round", rounds), ("councils", str(len(councils))), ("passages", str(len(passages))),
        ("reviewed", str(reviewed)), ("model only", str(model_only))]), body)


def council_page(council: str, passages: list[CodedPassage], codebook: Codebook, facts: RoundFacts,
                 agreement: dict, review_files: list[str]) -> str:
    """One council: codes by framework area, review counts, agreement when any, the strongest passages per code."""
    by_interview: dict[str, list[CodedPassage]] = defaultdict(list)
    for p in passages:
        by_interview[p.interview_id].append(p)
    counts = [(interview, *_review_counts(ps)) for interview, ps in sorted(by_interview.items())]
    reviewed, model_only = _review_counts(passages)
    review_chart = stacked_bars(counts, f"{council}: reviewed and model-only passages per interview", "review-counts")
    review_numbers = table(["interview", "passages", "reviewed", "model only"],
                           [[i, a + b, a, b] for i, a, b in counts] + [["all interviews", reviewed + model_only,
                                                                        reviewed, model_only]],
                           "Reviewed and model-only passages", "review-counts")
    files = " ".join(f'<a class="review-file" href="{esc(name)}">{esc(name)}</a>' for name in review_files)
    summary = council_summary(passages, codebook)
    body = (_codes_section(summary, "Codes by framework area", "codes-by-area")
            + f'<section id="review"><h2>Reviewed and model-only</h2><p>Review file: {files or "none written yet"}. '
              'Correct it in Excel and bring it back with <code>qcode review import</code>.</p>'
            + _figure(review_chart, review_numbers) + "</section>"
            + _agreement_section(agreement, codebook)
            + _passages_section(passages, summary))
    return _page(f"{council}: qcode council report", f'<a href="../{INDEX_PAGE}">All councils</a>',
                 _facts(facts, [("council", council), ("interviews", str(len(by_interview))),
                                ("passages", str(len(passages))), ("reviewed", str(reviewed)),
                                ("model only", str(model_only))]), body)


def round_pages(passages: list[CodedPassage], codebook: Codebook, facts: RoundFacts,
                reviewer_codes: dict[str, dict[str, tuple[str, ...]]],
                review_files: dict[str, list[str]]) -> dict[str, str]:
    """Every page of the round by its path under the reports folder: index.html and <council>/report.html."""
    pages = {INDEX_PAGE: index_page(passages, codebook, facts)}
    for council, council_passages in _by_council(passages).items():
        agreement = agreement_figures(council_passages, reviewer_codes, codebook.ids, council)
        pages[f"{slugify(council)}/{COUNCIL_PAGE}"] = council_page(
            council, council_passages, codebook, facts, agreement, review_files.get(council, []))
    return pages


def round_facts(store: Store, codebook: Codebook) -> RoundFacts:
    record = store.active_coder_record() or {}
    started = store.last_run_started()
    return RoundFacts(coder_id=record.get("coder_id", "none"), coder_kind=record.get("kind", "none"),
                      model_id=record.get("model_id", "none"), codebook_name=codebook.name,
                      codebook_version=codebook.version,
                      run_started=started.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if started else "")


def write_council_page(out_dir: Path, council: str, passages: list[CodedPassage], codebook: Codebook,
                       facts: RoundFacts, reviewer_codes: dict[str, dict[str, tuple[str, ...]]],
                       written_by_qcode: WrittenByQcode, remember: RememberExport | None = None) -> ExportResult:
    """<council>/report.html, from that council's passages only."""
    folder = Path(out_dir) / slugify(council)
    review_files = [name for name in ("review.csv", "review-new.csv") if (folder / name).exists()]
    agreement = agreement_figures(passages, reviewer_codes, codebook.ids, council)
    page = council_page(council, passages, codebook, facts, agreement, review_files)
    return write_export(folder / COUNCIL_PAGE, page.encode("utf-8"), written_by_qcode, remember=remember)


def write_index_page(out_dir: Path, passages: list[CodedPassage], codebook: Codebook, facts: RoundFacts,
                     written_by_qcode: WrittenByQcode, remember: RememberExport | None = None) -> ExportResult:
    """index.html: counts only, so ``passages`` need no text or scores."""
    page = index_page(passages, codebook, facts)
    return write_export(Path(out_dir) / INDEX_PAGE, page.encode("utf-8"), written_by_qcode, remember=remember)
