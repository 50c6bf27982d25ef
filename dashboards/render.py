"""The report as HTML (Jinja2, inline SVG charts) or PDF (reportlab, PNG charts).

Every value that comes from telemetry (service, transaction and site names) is
escaped: Jinja2 autoescaping in HTML, XML escaping in reportlab's paragraphs.
"""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from tierscope.dashboards import charts
from tierscope.dashboards.report import (
    Report,
    budget_left,
    duration,
    milliseconds,
    no_experiences,
    percent,
    summary,
)

_TEMPLATES = Environment(
    loader=PackageLoader("tierscope.dashboards", "templates"), autoescape=select_autoescape(["j2", "html"])
)


def html(report: Report) -> str:
    rendered = {
        "trend": charts.compliance_trend(report, "svg"),
        "tiers": charts.time_per_tier(report, "svg"),
        "sites": charts.site_waits(report, "svg"),
        "capacity": charts.capacity(report, "svg"),
    }
    return _TEMPLATES.get_template("report.html.j2").render(
        report=report,
        summary=summary(report),
        # Our own SVG (matplotlib escapes the text it draws), trusted as markup.
        charts={name: Markup(svg.decode()) if svg else None for name, svg in rendered.items()},  # noqa: S704
        percent=percent,
        budget_left=budget_left,
        milliseconds=milliseconds,
        duration=duration,
        no_experiences=no_experiences,
    )


def pdf(report: Report) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    story: list = [
        Paragraph(f"SLA report {escape(report.period.label)}", styles["Title"]),
        Paragraph(
            escape(
                f"Tenant {report.tenant}"
                + (f", service {report.service}" if report.service else "")
                + f" · {report.period.start.date()} to {report.period.end.date()} (UTC)"
            ),
            styles["Normal"],
        ),
        Spacer(1, 0.4 * cm),
        Paragraph("Summary", styles["Heading2"]),
        *[Paragraph(escape(line), styles["Normal"]) for line in summary(report)],
        Paragraph("Service levels", styles["Heading2"]),
    ]
    grid = TableStyle(
        [
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)
    if report.compliance:
        rows = [["Objective", "Covers", "Target", "Achieved", "Result", "Budget left", "Owned by"]]
        for c in report.compliance:
            result = "met" if c.met else ("missed" if c.met is False else "no data")
            owners = ", ".join(f"{owner} {share:.0%}" for owner, share in c.attribution.items())
            rows.append(
                [
                    Paragraph(escape(c.name), cell),
                    Paragraph(escape(c.subject), cell),
                    percent(c.target),
                    percent(c.sli),
                    result,
                    budget_left(c.budget_remaining),
                    Paragraph(escape(owners), cell),
                ]
            )
        story.append(
            Table(rows, colWidths=[3.4 * cm, 3.6 * cm, 1.6 * cm, 1.8 * cm, 1.4 * cm, 1.8 * cm, 3.4 * cm])
        )
        story[-1].setStyle(grid)
        if trend := charts.compliance_trend(report, "png"):
            story.append(_image(Image, trend, 16 * cm))
    else:
        story.append(Paragraph("No service level objectives are defined yet.", styles["Normal"]))
    story.append(Paragraph("Business transactions", styles["Heading2"]))
    if report.transactions:
        rows = [["Service", "Transaction", "Requests", "Errors", "p95", "Apdex"]]
        for t in report.transactions[:15]:
            rows.append(
                [
                    Paragraph(escape(t["service"]), cell),
                    Paragraph(escape(t["bt"]), cell),
                    f"{t['count']:,}",
                    percent(t["error_rate"]),
                    milliseconds(t["p95_ms"]),
                    "" if t["apdex"] is None else f"{t['apdex']:.2f}",
                ]
            )
        story.append(Table(rows, colWidths=[3 * cm, 6 * cm, 2 * cm, 2 * cm, 2 * cm, 1.6 * cm]))
        story[-1].setStyle(grid)
        if tiers := charts.time_per_tier(report, "png"):
            story.append(_image(Image, tiers, 16 * cm))
    else:
        story.append(Paragraph("No requests in this period.", styles["Normal"]))
    story += _incidents(report, styles, cell, grid)
    story += _experiences(report, styles, cell, grid)
    story += _outlook(report, styles)
    story.append(Paragraph("Sites", styles["Heading2"]))
    if report.sites:
        rows = [["Site", "Requests", "Users", "Mean", "Errors"]]
        rows += [
            [
                Paragraph(escape(str(s["site"])), cell),
                f"{s['requests']:,}",
                str(s["users"]),
                milliseconds(s["mean_ms"]),
                percent(float(s["error_rate"])),
            ]
            for s in report.sites
        ]
        story.append(Table(rows))
        story[-1].setStyle(grid)
    else:
        story.append(Paragraph("No request named its site in this period.", styles["Normal"]))
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=f"SLA report {report.period.label}",
        author="tierscope",
        leftMargin=1.5 * cm,
        rightMargin=1.5 * cm,
    )
    document.build(story)
    return buffer.getvalue()


def _image(image_class: type, png: bytes, width: float):
    from reportlab.lib.utils import ImageReader

    reader = ImageReader(io.BytesIO(png))
    pixels_wide, pixels_high = reader.getSize()
    return image_class(io.BytesIO(png), width=width, height=width * pixels_high / pixels_wide)


def _incidents(report: Report, styles: Any, cell: Any, grid: Any) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph, Table

    story: list = [Paragraph("Incidents", styles["Heading2"])]
    if not report.incidents:
        return [*story, Paragraph("No alert fired in this period.", styles["Normal"])]
    rows = [["Incident", "Severity", "Suspected", "Started (UTC)", "Duration", "Users", "Est. cost"]]
    for i in report.incidents:
        suspected = (i["tier"] or "") + (f": {i['component']}" if i["component"] else "")
        rows.append(
            [
                Paragraph(escape(i["title"]), cell),
                i["severity"],
                Paragraph(escape(suspected), cell),
                i["started"].strftime("%Y-%m-%d %H:%M"),
                duration(i["minutes"]),
                f"{i['users']:,}",
                "" if i["cost"] is None else f"{i['cost']:,.2f}",
            ]
        )
    table = Table(rows, colWidths=[5 * cm, 1.6 * cm, 3.6 * cm, 2.6 * cm, 1.6 * cm, 1.2 * cm, 1.8 * cm])
    table.setStyle(grid)
    return [*story, table]


def _experiences(report: Report, styles: Any, cell: Any, grid: Any) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, Spacer, Table

    story: list = [Paragraph("Slowest pages and sites", styles["Heading2"])]
    if not report.pages:
        return [*story, Paragraph(escape(no_experiences(report)), styles["Normal"])]
    rows = [["Page or action", "Actions", "Users", "Waited (p75)", "LCP (p75)", "Failed"]]
    rows += [
        [
            Paragraph(escape(str(p["page"])), cell),
            f"{p['actions']:,}",
            str(p["users"]),
            milliseconds(p["p75_ms"]),
            milliseconds(p["lcp_p75_ms"]),
            percent(float(p["failed"])),
        ]
        for p in report.pages
    ]
    table = Table(rows, colWidths=[7 * cm, 1.8 * cm, 1.5 * cm, 2.4 * cm, 2.2 * cm, 1.8 * cm])
    table.setStyle(grid)
    story += [table, Spacer(1, 0.3 * cm)]
    if report.experience_sites:
        rows = [["Site", "Actions", "Users", "Waited (p75)", "Network (mean)", "Browser (mean)"]]
        rows += [
            [
                Paragraph(escape(str(s["site"])), cell),
                f"{s['actions']:,}",
                str(s["users"]),
                milliseconds(s["p75_ms"]),
                milliseconds(s["network_ms"]),
                milliseconds(s["browser_ms"]),
            ]
            for s in report.experience_sites
        ]
        sites = Table(rows)
        sites.setStyle(grid)
        story.append(sites)
    if png := charts.site_waits(report, "png"):
        story.append(_image(Image, png, 16 * cm))
    return story


def _outlook(report: Report, styles: Any) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph

    story: list = [Paragraph("Forecasts and capacity", styles["Heading2"])]
    if not report.outlooks:
        text = "Not enough history for a forecast yet (a week of hourly figures is needed)."
        return [*story, Paragraph(text, styles["Normal"])]
    story += [Paragraph(escape(o.sentence()), styles["Normal"]) for o in report.outlooks]
    if png := charts.capacity(report, "png"):
        story.append(_image(Image, png, 16 * cm))
    return story
