"""The weekly executive report: the publish protocol (local folder and S3) and a real report of a demo week.

The report test builds Gold from demo data with the real pipeline (drops -> Bronze -> dbt), renders the
week 2026-W41 (2026-10-05 .. 2026-10-11), and reads the published PDF back with pypdf: its KPI figures
must be Gold's, computed here by separate SQL. Determinism is checked byte for byte: a second run of
the same week publishes the same PDF, HTML and charts (same sha256 in both manifests).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.reports.figures import format_value
from definitions import build_definitions
from demo.weather_api import serve_weather_api
from jobs.backfill import run_backfill
from resources.outputs import MANIFEST, READY, OutputsArea
from tests.conftest import TEST_START
from tests.support import generate_demo
from tests.test_alerting import smtp_sink  # noqa: F401  (the SMTP sink fixture)

WEEK = "2026-10-05"
FOLDER = "reports/weekly_executive/2026-W41"


def files_of(version: int) -> dict[str, bytes]:
    return {
        "report.pdf": f"pdf version {version} ".encode() * 5000,
        "report.html": f"<p>version {version}</p>".encode(),
        "chart_1.png": bytes([version % 256]) * 20000,
    }


def assert_published(outputs: OutputsArea, listed: set[str], files: dict[str, bytes]) -> None:
    """The folder holds exactly the manifest's files (plus manifest and marker), each with its sha256."""
    manifest = json.loads(outputs._zone().read_bytes(f"{FOLDER}/{MANIFEST}"))
    assert listed == {e["name"] for e in manifest["files"]} | {MANIFEST, READY}
    assert {e["name"]: e["sha256"] for e in manifest["files"]} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()
    }
    assert {e["name"]: e["size"] for e in manifest["files"]} == {name: len(data) for name, data in files.items()}
    assert outputs.read_published(FOLDER) == files


def poll_while_publishing(outputs: OutputsArea, versions: int, listing) -> list[str]:
    """Publish `versions` versions while a reader polls the folder; returns what the reader saw wrong."""
    problems: list[str] = []
    done = threading.Event()
    valid = {hashlib.sha256(files_of(v)["report.pdf"]).hexdigest() for v in range(versions)}

    def reader() -> None:
        while not done.is_set():
            names = listing()
            if names and READY not in names and outputs.is_s3 is False:
                problems.append(f"folder visible without {READY}: {sorted(names)}")
            try:
                files = outputs.read_published(FOLDER)
            except ValueError as error:  # a file that does not match its manifest entry
                problems.append(str(error))
                continue
            if files is not None and hashlib.sha256(files["report.pdf"]).hexdigest() not in valid:
                problems.append("a READY folder served a pdf of no published version")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(versions):
            outputs.publish(FOLDER, files_of(version))
    finally:
        done.set()
        thread.join()
    return problems


def test_local_publication_appears_whole_and_readers_never_see_it_without_ready(tmp_path):
    outputs = OutputsArea(root=str(tmp_path / "outputs"))
    final = tmp_path / "outputs" / FOLDER

    def listing() -> set[str]:
        try:
            return set(p.name for p in final.iterdir())
        except FileNotFoundError:
            return set()

    assert poll_while_publishing(outputs, 30, listing) == []
    assert_published(outputs, listing(), files_of(29))
    # no temporary folder is left behind, and nothing else sits beside the report
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["reports"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["2026-W41"]


def test_s3_publication_writes_ready_last_and_readers_see_only_whole_versions(settings, s3_bucket, s3_endpoint):
    outputs = OutputsArea(root=f"s3://{s3_bucket}/published", s3_endpoint_url=s3_endpoint)
    zone = outputs._zone()

    def listing() -> set[str]:
        return {key.rsplit("/", 1)[1] for key in zone.list_keys(FOLDER + "/")}

    assert poll_while_publishing(outputs, 4, listing) == []
    assert_published(outputs, listing(), files_of(3))
    assert zone.list_keys("reports/") == sorted(f"{FOLDER}/{name}" for name in listing())  # no temporary prefix left
    # a smaller version replaces a larger one: files not in the new manifest are removed
    outputs.publish(FOLDER, {"report.pdf": b"small"})
    assert listing() == {"report.pdf", MANIFEST, READY}


def gold_week(settings) -> dict[str, str]:
    """The KPI figures of the week, straight from the warehouse, printed as the report prints them."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        bookings, completed, cancelled, cents, km, active = con.execute(
            "select sum(bookings_total), sum(bookings_completed), sum(bookings_cancelled), sum(revenue_cents), "
            "sum(km_driven), sum(active_vehicles) from gold.kpi_daily "
            "where kpi_date between date '2026-10-05' and date '2026-10-11'"
        ).fetchone()
        fleet = con.execute("select count(*) from gold.dim_vehicles").fetchone()[0]
        readings, faults = con.execute(
            "select sum(readings), sum(fault_readings) from gold.fleet_health_daily "
            "where health_date between date '2026-10-05' and date '2026-10-11'"
        ).fetchone()
    return {
        "Bookings": format_value(bookings, "count"),
        "Completed trips": format_value(completed, "count"),
        "Cancellation rate": format_value(round(100 * cancelled / bookings, 1), "pct"),
        "Revenue": format_value(Decimal(cents) / 100, "eur"),
        "Distance driven": format_value(round(km, 1), "km"),
        "Fleet utilisation": format_value(round(100 * active / (7 * fleet), 1), "pct"),
        "Fault readings": format_value(round(100 * faults / readings, 1), "pct"),
    }


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a two-week backfill with the weather before the report: ~15 min under heavy load
def test_the_report_of_a_demo_week_shows_golds_figures_is_published_and_mailed(settings, smtp_sink):  # noqa: F811
    generate_demo(settings, TEST_START, 11)  # 2026-10-01 .. 2026-10-11: W41 whole, W40 from Thursday
    mail = {"host": "127.0.0.1", "port": str(smtp_sink.port), "to": "board@example.org"}
    with dg.instance_for_test() as instance, serve_weather_api(seed=7, scale=0.01) as weather_api:
        weather = {"url": weather_api.url}
        defs = build_definitions(replace(settings, alert_channels=("smtp",), smtp=mail, weather=weather))
        # as `make demo` runs it: the weather first (caught up from the first day), then the models
        summary = run_backfill(defs, instance, TEST_START, date(2026, 10, 12), weather=True)
        assert summary.success, summary
        assert [run[0] for run in summary.runs] == ["fetch_weather", "load_hourly", "refresh_unpartitioned",
                                                     "build_daily"]  # fmt: skip
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            days_with_weather = con.execute(
                "SELECT count(DISTINCT feature_date), count(*) - count(temperature_c) FROM gold.demand_features_hourly"
            ).fetchone()
        assert days_with_weather == (11, 0)  # every day's rows have their weather
        job = defs.resolve_job_def("publish_weekly_report")
        first = job.execute_in_process(instance=instance, partition_key=WEEK)
        assert first.success
        outputs: OutputsArea = defs.resources["outputs"]
        published = outputs.read_published(FOLDER)
        second = job.execute_in_process(instance=instance, partition_key=WEEK)
        assert second.success

    # the KPI table of the PDF holds Gold's figures
    text = pdf_text(published["report.pdf"])
    for name, value in gold_week(settings).items():
        assert f"{name} {value}" in text, (name, value)
    assert "ISO week 2026-W41" in text

    # exactly the manifest's files, matching sha256; the same bytes again on the re-run
    folder = Path(settings.outputs_root) / FOLDER
    assert_published(outputs, {p.name for p in folder.iterdir()}, published)
    assert sorted(published) == [
        "chart_1_bookings.png",
        "chart_2_revenue.png",
        "chart_3_fleet.png",
        "chart_4_hourly.png",
        "kpis.json",
        "report.html",
        "report.pdf",
    ]
    assert outputs.read_published(FOLDER) == published  # byte-identical PDF, HTML and charts

    [event] = first.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert event.partition == WEEK
    assert metadata["strata/outputs"].value == {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in published.items()
    }
    read = metadata["strata/input_partitions"].value
    assert set(read["gold/kpi_daily"]) == {f"2026-09-{d}" for d in range(28, 31)} | {
        f"2026-10-{d:02d}" for d in range(1, 12)
    }
    assert read["gold/kpi_daily"]["2026-10-05"] != "missing" and read["gold/kpi_daily"]["2026-09-28"] == "missing"
    assert metadata["strata/preview"].value.startswith("![Bookings per day](data:image/png;base64,")
    print("render seconds:", metadata["strata/render_seconds"].value)

    # mailed twice (once per run), the PDF attached
    assert len(smtp_sink.messages) == 2
    mail = smtp_sink.messages[0]["message"]
    assert mail["Subject"] == "[strata local] Weekly executive summary 2026-W41"
    [attachment] = [part for part in mail.walk() if part.get_filename()]
    assert attachment.get_filename() == "strata-weekly-2026-W41.pdf"
    assert attachment.get_payload(decode=True) == published["report.pdf"]


def fixed_week_figures():
    """A week of made-up figures, for the rendering tests that need no pipeline."""
    from assets.reports.figures import Kpi, WeekFigures, week_dates

    start = date(2026, 10, 5)
    return WeekFigures(
        start=start,
        kpis=[
            Kpi("Bookings", "count", 12345, 11000),
            Kpi("Revenue", "eur", Decimal("98765.43"), Decimal("90000.00")),
            Kpi("Fleet utilisation", "pct", 61.2, 58.7),
            Kpi("Forecast accuracy", "pct", None, None),
            Kpi("Completed trips", "count", 10000, 9000),
            Kpi("Cancellation rate", "pct", 5.0, 6.0),
            Kpi("Distance driven", "km", 4321.5, 4000.0),
            Kpi("Fault readings", "pct", 1.5, 1.25),
        ],
        daily={
            "date": week_dates(start),
            "bookings": [1700, 1800, 1750, 1900, 2100, 1600, 1495],
            "bookings_previous": [1500] * 7,
            "revenue_eur": [14000.5] * 7,
            "active_vehicles": [600] * 7,
            "fault_readings": [30] * 7,
        },
        hourly=[(h, 100 + h) for h in range(24)],
    )


def test_rendering_is_deterministic_and_the_pdf_text_carries_the_kpis():
    from assets.reports.weekly import report_files

    figures = fixed_week_figures()
    first, seconds, first_preview = report_files(figures)
    second, _, second_preview = report_files(figures)
    assert first == second  # byte for byte: PDF, HTML, charts, kpis.json
    assert first_preview == second_preview
    assert list(seconds) == ["charts", "preview", "html", "pdf"]
    text = pdf_text(first["report.pdf"])
    for line in (
        "Bookings 12,345 11,000 +12.2%",
        "Revenue EUR 98,765.43 EUR 90,000.00 +9.7%",
        "Fleet utilisation 61.2% 58.7% +2.5 pp",
        "Forecast accuracy n/a n/a n/a",
        "The busiest day was Friday 09 October with 2,100 bookings.",
    ):
        assert line in " ".join(text.split()), line
    from pypdf import PdfReader

    info = PdfReader(io.BytesIO(first["report.pdf"])).metadata
    assert (info["/CreationDate"], info["/ModDate"]) == ("D:20261012000000Z", "D:20261012000000Z")


def test_the_preview_is_the_first_chart_downscaled_and_no_chart_is_drawn_twice(monkeypatch: pytest.MonkeyPatch):
    """The UI preview comes from the rendered first chart's PNG: drawing charts is most of the rendering
    time, and it used to draw all four again at 45 dpi for one preview (issue 15)."""
    import matplotlib.figure
    from PIL import Image

    from assets.reports.weekly import report_files

    figures = fixed_week_figures()
    saved: list[float] = []  # the dpi of every chart matplotlib writes
    savefig = matplotlib.figure.Figure.savefig

    def counting_savefig(self, *args, **kwargs):
        saved.append(kwargs.get("dpi"))
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", counting_savefig)

    files, _, preview = report_files(figures)

    assert saved == [100, 100, 100, 100]  # the four charts, once each, at full size
    assert (preview.name, preview.title) == ("chart_1_bookings.png", "Bookings per day")
    with Image.open(io.BytesIO(files["chart_1_bookings.png"])) as full, Image.open(io.BytesIO(preview.png)) as small:
        assert (full.size, small.size) == ((520, 300), (234, 135))
        # the same picture: the downscaled full chart and the preview differ by little on average
        reference = full.convert("RGB").resize(small.size, Image.Resampling.LANCZOS)
        pixels = list(zip(reference.getdata(), small.convert("RGB").getdata(), strict=True))
        mean_error = sum(abs(a - b) for pair in pixels for a, b in zip(*pair, strict=True)) / (3 * len(pixels))
        assert mean_error < 4, mean_error
