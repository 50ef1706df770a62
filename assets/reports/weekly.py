"""The weekly executive report: one ISO week of Gold as HTML and PDF, published and e-mailed.

Weekly partitions (Monday to Sunday, UTC); the Monday 06:00 schedule (jobs/schedules.py) requests the
week before, and any past week can be re-run from the UI. A run reads the week and the week before
from Gold (`figures.py`), renders charts, narrative, HTML and PDF (`render.py`), publishes them with
the publish protocol (resources/outputs.py) under `reports/weekly_executive/<ISO week>/`, and mails
the PDF through the SMTP channel. The same Gold data gives the same files, byte for byte.
"""

import json
import time
from datetime import date, timedelta

import dagster as dg

from assets.reports.figures import DAILY_SOURCES, FORECAST_TABLE, WeekFigures, read_week, week_dates
from assets.reports.render import Chart, kpi_rows, preview_of, render_charts, render_html, render_pdf
from audit.metadata import code_identity
from resources.alerting import AlertingResource
from resources.iceberg import IcebergCatalog
from resources.outputs import OutputsArea
from resources.warehouse import Warehouse

REPORT_KEY = dg.AssetKey(["reports", "weekly_executive_report"])
OUTPUT_FOLDER = "reports/weekly_executive"
GOLD_INPUTS = [dg.AssetKey(path.split("/")) for path in DAILY_SOURCES] + [dg.AssetKey(["gold", "dim_vehicles"])]
FORECAST_INPUT = dg.AssetKey(["ml", "demand_forecast"])


def report_files(figures: WeekFigures) -> tuple[dict[str, bytes], dict[str, float], Chart]:
    """The files of a week's report, the seconds each rendering stage took, and the UI preview (the first
    chart, downscaled: no chart is drawn twice)."""
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    charts = render_charts(figures)
    seconds["charts"] = time.perf_counter() - began
    began = time.perf_counter()
    preview = preview_of(charts[0])
    seconds["preview"] = time.perf_counter() - began
    began = time.perf_counter()
    html = render_html(figures, charts)
    seconds["html"] = time.perf_counter() - began
    began = time.perf_counter()
    pdf = render_pdf(html)
    seconds["pdf"] = time.perf_counter() - began
    kpis = [row.__dict__ for row in kpi_rows(figures)]
    files = {
        "report.html": html.encode(),
        "report.pdf": pdf,
        "kpis.json": json.dumps({"week": figures.label, "kpis": kpis}, indent=2).encode() + b"\n",
        **{chart.name: chart.png for chart in charts},
    }
    return files, seconds, preview


def gold_inputs_read(context: dg.AssetExecutionContext, days: list[date]) -> dict[str, dict[str, str]]:
    """Per Gold table, the partitions read and the run that last materialized each (its version of the day)."""
    keys = [f"{day:%Y-%m-%d}" for day in days]
    read: dict[str, dict[str, str]] = {}
    for key in GOLD_INPUTS:
        if key.path[1] == "dim_vehicles":
            event = context.instance.get_latest_materialization_event(key)
            read[key.to_user_string()] = {"unpartitioned": event.run_id if event else "never materialized"}
            continue
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=keys), limit=len(keys) * 4
        ).records
        latest: dict[str, str] = {}
        for record in sorted(records, key=lambda r: r.storage_id):  # later materializations win
            latest[record.partition_key] = record.run_id
        read[key.to_user_string()] = {day: latest.get(day, "missing") for day in keys}
    return read


def build_weekly_report_asset(weekly: dg.WeeklyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=REPORT_KEY,
        group_name="reports",
        partitions_def=weekly,
        deps=[*GOLD_INPUTS, FORECAST_INPUT],
        kinds={"pdf", "html"},
        description="Weekly executive summary of an ISO week from Gold: KPIs, week-over-week changes, charts; "
        "published as HTML and PDF and e-mailed.",
    )
    def weekly_executive_report(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        iceberg: IcebergCatalog,
        outputs: OutputsArea,
        alerting: AlertingResource,
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        start = window.start.date()
        began = time.perf_counter()
        figures = read_week(warehouse, iceberg, start)
        read_seconds = time.perf_counter() - began
        files, seconds, preview = report_files(figures)
        folder = f"{OUTPUT_FOLDER}/{figures.label}"
        publication = outputs.publish(folder, files)
        pdf_uri = outputs.uri(f"{folder}/report.pdf")
        mailed = alerting.send_document(
            f"Weekly executive summary {figures.label}",
            f"The weekly executive summary of {figures.label} is attached and published at {publication.uri}.\n",
            [(f"strata-weekly-{figures.label}.pdf", files["report.pdf"], "application/pdf")],
        )
        context.log.info(f"report {figures.label} published at {publication.uri}; e-mailed: {mailed}")
        previous_and_this = week_dates(start - timedelta(days=7)) + week_dates(start)
        git_sha, image = code_identity()
        return dg.MaterializeResult(
            metadata={
                "dagster/uri": dg.MetadataValue.url(publication.uri)
                if "://" in publication.uri
                else dg.MetadataValue.path(publication.uri),
                "strata/week": figures.label,
                "strata/data_window": f"[{start}, {figures.end})",
                "strata/input_partitions": dg.MetadataValue.json(gold_inputs_read(context, previous_and_this)),
                "strata/input_snapshots": dg.MetadataValue.json({FORECAST_TABLE: figures.forecast_snapshot}),
                "strata/rows_in": sum(figures.rows_read.values()),
                "strata/outputs": dg.MetadataValue.json(
                    {f.name: {"size": f.size, "sha256": f.sha256} for f in publication.files}
                ),
                "strata/pdf": dg.MetadataValue.url(pdf_uri) if "://" in pdf_uri else dg.MetadataValue.path(pdf_uri),
                "strata/kpis": dg.MetadataValue.md(
                    "| KPI | this week | previous | change |\n|---|---:|---:|---:|\n"
                    + "\n".join(f"| {r.name} | {r.value} | {r.previous} | {r.change} |" for r in kpi_rows(figures))
                ),
                "strata/preview": dg.MetadataValue.md(
                    f"![{preview.title}](data:image/png;base64,{preview.base64})\n\n"
                    f"Full size: `{outputs.uri(f'{folder}/{preview.name}')}`"
                ),
                "strata/emailed": mailed,
                "strata/render_seconds": dg.MetadataValue.json(
                    {"read_gold": round(read_seconds, 3), **{k: round(v, 3) for k, v in seconds.items()}}
                ),
                "strata/git_sha": git_sha,
                "strata/image": image,
            }
        )

    return weekly_executive_report
