"""Rendering of the weekly executive report: charts (matplotlib), narrative and HTML (Jinja2), PDF (WeasyPrint).

Deterministic for the same figures, so a re-run of a week publishes the same bytes:
- charts are PNGs from matplotlib's Agg backend without the `Software` stamp, drawn with fixed sizes;
- the HTML carries the charts inline (data URIs) and no clock;
- the PDF's dates (`dcterms.created` / `dcterms.modified`) are the end of the report's week, and
  WeasyPrint writes no random document /ID unless asked to.
matplotlib and WeasyPrint are imported inside the functions (together ~1 s), not when the code loads.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from assets.reports.figures import WeekFigures, format_value

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Strata weekly executive summary {{ figures.label }}</title>
<meta name="dcterms.created" content="{{ figures.end.isoformat() }}T00:00:00Z">
<meta name="dcterms.modified" content="{{ figures.end.isoformat() }}T00:00:00Z">
<meta name="generator" content="strata">
<style>
  @page { size: A4; margin: 16mm 14mm; }
  body { font-family: sans-serif; font-size: 10pt; color: #1d2733; }
  h1 { font-size: 17pt; margin: 0 0 2mm 0; }
  .week { color: #5b6775; margin-bottom: 5mm; }
  table.kpis { border-collapse: collapse; width: 100%; margin: 4mm 0; }
  table.kpis th, table.kpis td { border-bottom: 1px solid #d5dbe1; padding: 1.5mm 2mm; text-align: right; }
  table.kpis th:first-child, table.kpis td:first-child { text-align: left; }
  .charts img { width: 48%; margin: 1mm 0.5%; }
  .narrative p { margin: 1.5mm 0; line-height: 1.35; }
</style>
</head>
<body>
<h1>Weekly executive summary</h1>
<div class="week">ISO week {{ figures.label }}:
{{ figures.start.isoformat() }} to {{ last_day.isoformat() }} (UTC)</div>
<div class="narrative">
<p>Customers made {{ kpi["Bookings"].value }} bookings in week {{ figures.label }}
({{ kpi["Bookings"].change }} on the week before), of which {{ kpi["Completed trips"].value }} were
completed trips; {{ kpi["Cancellation rate"].value }} were cancelled.</p>
<p>Revenue was {{ kpi["Revenue"].value }} ({{ kpi["Revenue"].change }}).
{%- if busiest %} The busiest day was {{ busiest.day }} with {{ busiest.bookings }} bookings.{% endif %}</p>
<p>The fleet drove {{ kpi["Distance driven"].value }} with a utilisation of {{ kpi["Fleet utilisation"].value }}
({{ kpi["Fleet utilisation"].change }});
{{ kpi["Fault readings"].value }} of the vehicle readings reported a fault.</p>
{%- if kpi["Forecast accuracy"].value != "n/a" %}
<p>The demand forecast was {{ kpi["Forecast accuracy"].value }} accurate (1 - WAPE).</p>
{%- else %}
<p>No demand forecast covered this week.</p>
{%- endif %}
</div>
<table class="kpis">
<tr><th>KPI</th><th>This week</th><th>Previous week</th><th>Change</th></tr>
{%- for row in rows %}
<tr><td>{{ row.name }}</td><td>{{ row.value }}</td><td>{{ row.previous }}</td><td>{{ row.change }}</td></tr>
{%- endfor %}
</table>
<div class="charts">
{%- for chart in charts %}
<img src="data:image/png;base64,{{ chart.base64 }}" alt="{{ chart.title }}">
{%- endfor %}
</div>
</body>
</html>
"""


@dataclass(frozen=True)
class Chart:
    name: str  # file name when published
    title: str
    png: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode()


@dataclass(frozen=True)
class KpiRow:
    name: str
    value: str
    previous: str
    change: str


def _png(figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def render_charts(figures: WeekFigures, dpi: int = 100) -> list[Chart]:
    """The four charts of the report, as PNGs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    daily = figures.daily
    x = list(range(7))
    specs = []

    def new(title: str):
        figure, axes = plt.subplots(figsize=(5.2, 3.0))
        axes.set_title(title, fontsize=10)
        axes.spines[["top", "right"]].set_visible(False)
        return figure, axes

    figure, axes = new("Bookings per day")
    axes.bar([i - 0.2 for i in x], daily["bookings_previous"], width=0.4, color="#b8c4d0", label="previous week")
    axes.bar([i + 0.2 for i in x], daily["bookings"], width=0.4, color="#2f6db5", label="this week")
    axes.set_xticks(x, WEEKDAYS)
    axes.legend(fontsize=8, frameon=False)
    specs.append(("chart_1_bookings.png", "Bookings per day", figure))

    figure, axes = new("Revenue per day (EUR)")
    axes.bar(x, [float(v) for v in daily["revenue_eur"]], color="#3a9a6a")
    axes.set_xticks(x, WEEKDAYS)
    specs.append(("chart_2_revenue.png", "Revenue per day", figure))

    figure, axes = new("Fleet: active vehicles and fault readings")
    axes.plot(x, daily["active_vehicles"], marker="o", color="#2f6db5", label="active vehicles")
    axes.set_xticks(x, WEEKDAYS)
    twin = axes.twinx()
    twin.bar(x, daily["fault_readings"], color="#d9822b", alpha=0.35, label="fault readings")
    axes.legend(fontsize=8, frameon=False, loc="upper left")
    specs.append(("chart_3_fleet.png", "Fleet health", figure))

    figure, axes = new("Bookings by hour of day (UTC)")
    hours = dict(figures.hourly)
    axes.bar(range(24), [hours.get(h, 0) for h in range(24)], color="#7b5ea7")
    axes.set_xticks(range(0, 24, 3))
    specs.append(("chart_4_hourly.png", "Bookings by hour", figure))

    charts = []
    for name, title, figure in specs:
        figure.tight_layout()
        charts.append(Chart(name, title, _png(figure, dpi)))
        plt.close(figure)
    return charts


def preview_of(chart: Chart, scale: float = 0.45) -> Chart:
    """A small copy of a rendered chart for the asset's UI preview, downscaled from its PNG rather than
    drawn again (drawing the charts is most of the rendering time). 64 colours keep it near 2 KB in the
    event log for a chart of a few flat colours. Pillow is matplotlib's own dependency; resampling,
    quantizing and PNG encoding are deterministic."""
    from PIL import Image

    with Image.open(io.BytesIO(chart.png)) as image:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.LANCZOS).quantize(64)
    buffer = io.BytesIO()
    small.save(buffer, format="png", optimize=True)
    return Chart(chart.name, chart.title, buffer.getvalue())


def kpi_rows(figures: WeekFigures) -> list[KpiRow]:
    return [
        KpiRow(k.name, format_value(k.this_week, k.unit), format_value(k.previous_week, k.unit), k.change)
        for k in figures.kpis
    ]


def render_html(figures: WeekFigures, charts: list[Chart]) -> str:
    import jinja2

    rows = kpi_rows(figures)
    kpi = {row.name: row for row in rows}
    busiest = None
    if any(figures.daily["bookings"]):
        index = max(range(7), key=lambda i: (figures.daily["bookings"][i], -i))
        busiest = {
            "day": f"{figures.daily['date'][index]:%A %d %B}",
            "bookings": f"{figures.daily['bookings'][index]:,}",
        }
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(TEMPLATE).render(
        figures=figures,
        last_day=figures.daily["date"][-1],
        rows=rows,
        kpi=kpi,
        busiest=busiest,
        charts=charts,
    )


def render_pdf(html: str) -> bytes:
    import weasyprint

    return weasyprint.HTML(string=html).write_pdf()
