"""analysis.report: one self-contained index.html with the aggregate tables and embedded PNGs,
everything escaped, and no directory overwritten unless it is a previous report."""

from __future__ import annotations

import base64
import struct
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from analysis.differential import DIFFERENTIAL_COLUMNS, differential
from analysis.load import load
from analysis.onset import ONSET_COLUMNS, onsets
from analysis.report import INDEX, REPORT_MARKER, is_previous_report, write_report
from analysis.shares import AGGREGATE_COLUMNS, CALL_VERDICTS, NOT_ENOUGH, aggregate
from analysis.verdicts import verdicts
from tests.recordsets import write_runs
from tests.unit.test_plots import campaign, synthetic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The tables (header, rows of cell texts, row classes) and image sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[object]]] = []
        self.images: list[str] = []
        self.metas: list[dict[str, str | None]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"header": [], "rows": [], "classes": []})
        elif tag == "tr":
            self._row = []
            self.tables[-1]["classes"].append(dict(attrs).get("class"))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        elif tag == "meta":
            self.metas.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if table["header"]:
                table["rows"].append(self._row)
            else:
                table["header"] = self._row
                table["classes"].pop()  # the header row's
            self._row = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def png_size(src: str) -> tuple[int, int]:
    """Width and height of a data-URI PNG (from its IHDR chunk); fails if it is not a PNG."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src[len(prefix) :], validate=True)
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = load(write_runs(tmp_path_factory.mktemp("campaign"), *campaign()))
    return records, verdicts(records)


def assert_table_is(table: dict[str, list[object]], expected: pd.DataFrame) -> None:
    """The HTML table shows the aggregate: its columns, its rows in order, its counts, its
    shares (3 decimals, blank when not enough data) and which rows have too few runs."""
    assert table["header"] == list(expected.columns)
    rows = table["rows"]
    assert len(rows) == len(expected)
    column = {name: i for i, name in enumerate(expected.columns)}
    for got, (_, want) in zip(rows, expected.iterrows(), strict=True):
        assert isinstance(got, list)
        assert got[column["verdict"]] == want["verdict"]
        assert int(got[column["count"]]) == want["count"]
        assert int(got[column["runs"]]) == want["runs"]
        share = "" if pd.isna(want["share"]) else f"{want['share']:.3f}"
        assert got[column["share"]] == share
        assert got[column["status"]] == want["status"]
    not_enough = (expected["status"] == NOT_ENOUGH).tolist()
    assert [c == "not-enough" for c in table["classes"]] == not_enough


def test_report_holds_the_tables_and_the_figures(
    tmp_path: Path, loaded: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, table = loaded
    path = write_report(table, tmp_path / "out" / "report", records=records)
    assert path == tmp_path / "out" / "report" / INDEX
    assert [p.name for p in path.parent.iterdir()] == [INDEX]  # nothing else left behind
    assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever it is shared with
    page = parse(path)
    assert {"name": "generator", "content": "ringprobe analysis.report"} in page.metas
    assert len(page.tables) == 5
    assert_table_is(page.tables[0], aggregate(table, by=["app", "day"]))
    assert page.tables[0]["header"] == ["app", "day", *AGGREGATE_COLUMNS]
    assert page.tables[0]["rows"][0][:2] == ["control", "2026-11-28"]  # groups sorted
    assert_table_is(page.tables[1], aggregate(table, by=["app"]))
    calls = aggregate(table, by=["app"], collapse={"calls": CALL_VERDICTS})
    assert_table_is(page.tables[2], calls)
    changes = onsets(table, by=["app", "asn"])
    assert page.tables[3]["header"] == ["app", "asn", *ONSET_COLUMNS]
    assert len(page.tables[3]["rows"]) == len(changes)
    spread = differential(table, by=["app", "asn"])
    assert page.tables[4]["header"] == ["app", "asn", *DIFFERENTIAL_COLUMNS]
    assert [row[:2] for row in page.tables[4]["rows"]] == spread[["app", "asn"]].values.tolist()
    # Shares over time, heat map, time to cut, and one timeline: the latest calls_cut run.
    assert len(page.images) == 4
    for src in page.images:
        width, height = png_size(src)
        assert width > 300
        assert height > 200
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text
    assert "https://" not in text  # self-contained: nothing fetched
    latest = table[table["verdict"] == "calls_cut"].sort_values("start_time")["run_id"].iloc[-1]
    assert f"Call flows of whatsapp, run {latest} (calls_cut)" in text
    assert "24 runs, 72 verdicts" in text
    assert "Restricted calls per network and day" in text


def test_by_keys_and_no_records(tmp_path: Path, loaded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _records, table = loaded
    path = write_report(table, tmp_path, by=["asn", "week"], min_runs=3)
    page = parse(path)
    assert_table_is(page.tables[0], aggregate(table, by=["asn", "week"], min_runs=3))
    assert page.tables[0]["header"][:2] == ["asn", "week"]
    assert len(page.images) == 3  # without records, no timelines
    only_app = parse(write_report(table, tmp_path / "apps", by=["app"]))
    assert len(only_app.tables) == 4  # by app once, not twice; then onsets, call flows


def test_every_value_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    table = synthetic([("calls_cut", evil, 0, "AS<1>&")] * 3 + [("ok", "signal", 0, "AS2")])
    table["call_cut_s"] = [2.0, 3.0, 4.0, float("nan")]
    path = write_report(table, tmp_path, min_runs=1)
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text
    assert "AS<1>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "AS&lt;1&gt;&amp;" in text
    page = parse(path)
    assert page.tables[0]["rows"][0][0] == evil  # the parser unescapes: the value is intact
    assert len(page.images) == 3


def test_an_empty_table_still_gives_a_report(tmp_path: Path) -> None:
    page = parse(write_report(synthetic([]), tmp_path))
    assert [t["rows"] for t in page.tables] == [[], [], [], []]  # no call tests: no flows
    assert len(page.images) == 3


def test_a_previous_report_is_replaced(tmp_path: Path) -> None:
    table = synthetic([("ok", "signal", 0, "AS1")] * 2)
    first = write_report(table, tmp_path, by=["app"])
    assert is_previous_report(tmp_path)
    assert first.read_text(encoding="utf-8").index(REPORT_MARKER) < 300  # in the head, early
    second = write_report(table, tmp_path, by=["asn"])
    assert second == first
    assert parse(second).tables[0]["header"][0] == "asn"
    assert [p.name for p in tmp_path.iterdir()] == [INDEX]


@pytest.mark.parametrize(
    "files",
    [
        {"records.jsonl": "{}\n"},
        {INDEX: "<html>my own page</html>"},  # an index.html without the marker
        {INDEX: REPORT_MARKER, "notes.txt": "mine"},  # a report plus something else
    ],
)
def test_other_directories_are_refused(tmp_path: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty and not a previous report"):
        write_report(synthetic([]), tmp_path)
    assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()} == files


def test_a_file_or_a_bad_key_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not a directory"):
        write_report(synthetic([]), target)
    with pytest.raises(ValueError, match="cannot group by 'nowhere'"):
        write_report(synthetic([("ok", "signal", 0, "AS1")]), tmp_path / "new", by=["nowhere"])
    assert not (tmp_path / "new").exists()
