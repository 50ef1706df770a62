"""`platform/slo_report`: each day's service-level figures per asset group, published and shown in the UI.

It computes, from the event log (audit/slo.py), the figures of the runs started on its day: success rate,
MTTR, MTTD, freshness attainment, critical checks passing and models with tests, per asset group. It
publishes `slo.html` (table and chart) and `slo.json` to the outputs area under `reports/slo/<day>/`
(publish protocol, resources/outputs.py) and shows the table as a markdown summary in the UI. The same
figures for any period: `python -m audit slo --since ... --until ...`.
"""

import json

import dagster as dg

from audit.slo import collect_history, compute_slo, slo_as_json, slo_html, slo_markdown
from resources.outputs import OutputsArea
from resources.settings import DBT_PROJECT_DIR

SLO_REPORT_KEY = dg.AssetKey(["platform", "slo_report"])
OUTPUT_FOLDER = "reports/slo"


def build_slo_report_asset(daily: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=SLO_REPORT_KEY,
        group_name="platform",
        partitions_def=daily,
        kinds={"html"},
        description="Service-level figures of the day's runs per asset group (success rate, MTTR, MTTD, "
        "freshness, critical checks, models with tests), from the event log; published as HTML and JSON.",
    )
    def slo_report(context: dg.AssetExecutionContext, outputs: OutputsArea) -> dg.MaterializeResult:
        window = context.partition_time_window
        history = collect_history(
            context.instance, window.start, window.end, DBT_PROJECT_DIR / "target" / "manifest.json"
        )
        # This run is not finished, so it is not in its own figures.
        rows = compute_slo(history)
        figures = slo_as_json(rows)
        files = {
            "slo.html": slo_html(rows, window.start, window.end).encode(),
            "slo.json": json.dumps(figures, indent=2, sort_keys=True).encode(),
        }
        folder = f"{OUTPUT_FOLDER}/{context.partition_key}"
        publication = outputs.publish(folder, files)
        return dg.MaterializeResult(
            metadata={
                "strata/slo": dg.MetadataValue.md(slo_markdown(rows, window.start, window.end)),
                "strata/runs_counted": len(history.runs),
                "strata/data_window": f"[{window.start:%Y-%m-%d}, {window.end:%Y-%m-%d})",
                "strata/outputs": dg.MetadataValue.url(publication.uri),
            }
        )

    return slo_report
