"""Ratios, targets and a self-contained HTML report (inline SVG charts, no script, no network)."""

import math
from html import escape

from . import capacity
from .variants import CLIENT_PROTOCOLS, PROTOCOL_CONNECTIONS

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
TARGET_SINGLE_OK_PER_S = 3000
TARGET_P99_MS = 100
TARGET_VS_DELAY = 3.0
TARGET_VS_BARE = 0.8
TARGET_BATCH_EVENTS_PER_S = 25_000
TARGET_CONFLUENT_EVENTS_PER_S = 100_000


def _summary(results: dict, variant: str, scenario: str) -> dict | None:
    for cell in results["cells"]:
        if cell["variant"] == variant and cell["scenario"] == scenario:
            return cell["summary"]
    return None


def _rate(cell_summary: dict, kind: str) -> float:
    return cell_summary["events_per_s"] if kind == "batch" else cell_summary["ok_per_s"]


def comparisons(results: dict) -> list[dict]:
    """Every other variant against the gateway's defaults on the same scenario, same run."""
    rows = []
    for cell in results["cells"]:
        if cell["variant"] == "ours":
            continue
        ours = _summary(results, "ours", cell["scenario"])
        if ours is None:
            continue
        theirs = cell["summary"]
        ours_rate, their_rate = _rate(ours, cell["kind"]), _rate(theirs, cell["kind"])
        rows.append(
            {
                "variant": cell["variant"],
                "label": cell["label"],
                "group": cell["group"],
                "scenario": cell["scenario"],
                "unit": "events/s" if cell["kind"] == "batch" else "2xx req/s",
                "rate": their_rate,
                "ours_rate": ours_rate,
                "ours_over_variant": ours_rate / their_rate if their_rate else None,
                "variant_over_ours": their_rate / ours_rate if ours_rate else None,
                "p99_ms": theirs["percentiles_ms"]["99"],
                "ours_p99_ms": ours["percentiles_ms"]["99"],
                "end_to_end_events_per_s": theirs.get("end_to_end_events_per_s"),
                "ours_end_to_end_events_per_s": ours.get("end_to_end_events_per_s"),
            }
        )
    return rows


def protocol_rows(results: dict) -> list[dict]:
    """Each client protocol's scenario next to the native batch scenario of the same run."""
    native = f"batch-{PROTOCOL_CONNECTIONS}"
    reference = _summary(results, "ours", native)
    cells = [
        cell
        for cell in results["cells"]
        if cell["variant"] == "ours" and (cell.get("protocol") or cell["scenario"] == native)
    ]
    if not any(cell.get("protocol") for cell in cells):
        return []
    rows = []
    for cell in sorted(cells, key=lambda cell: cell.get("protocol") is not None):
        summary, protocol = cell["summary"], CLIENT_PROTOCOLS.get(cell.get("protocol"))
        share = (
            f"{summary['events_per_s'] / reference['events_per_s']:.0%} of native {native}"
            if protocol and reference and reference["events_per_s"]
            else "reference"
            if not protocol
            else "no native reference"
        )
        kafka = cell.get("kafka")
        rows.append(
            {
                "scenario": cell["scenario"],
                "endpoint": protocol.endpoint if protocol else "native POST /api/v1/events/{topic}",
                "answers_when": protocol.answers_when
                if protocol
                else "durable (RabbitMQ confirmed)",
                "connections": cell["connections"],
                "ok_per_s": summary["ok_per_s"],
                "events_per_s": summary["events_per_s"],
                "share_of_native": share,
                "p50_ms": summary["percentiles_ms"]["50"],
                "p99_ms": summary["percentiles_ms"]["99"],
                "non_2xx": summary["requests"] - summary["ok"],
                "kafka": kafka_summary(cell),
                "kafka_ok": bool(kafka and kafka["ok"]),
                "lost": kafka["lost"] if kafka else None,
            }
        )
    return rows


def _delivered_rate(summary: dict) -> float:
    return summary.get("end_to_end_events_per_s") or 0.0


def targets(results: dict) -> list[dict]:
    """The issue's targets, judged on this run's figures (None: not measured in this run)."""
    single = _summary(results, "ours", "single-200")
    delay = _summary(results, "seed-delay", "single-200")
    bare = _summary(results, "bare", "single-200")
    checks = [
        cell.get("kafka")
        for cell in results["cells"] + results["open_loop"]
        if cell.get("kafka") is not None
    ]

    def target(text, value, met, shown):
        return {"text": text, "value": shown if value is not None else "not measured", "met": met}

    rows = [
        target(
            f"durable single-event POST >= {TARGET_SINGLE_OK_PER_S:,} req/s at 200 connections",
            single,
            single and single["ok_per_s"] >= TARGET_SINGLE_OK_PER_S,
            single and f"{single['ok_per_s']:,.0f} 2xx req/s",
        ),
        target(
            f"p99 <= {TARGET_P99_MS} ms at 200 connections (closed loop)",
            single,
            single and single["percentiles_ms"]["99"] <= TARGET_P99_MS,
            single and f"{single['percentiles_ms']['99']:.1f} ms",
        ),
    ]
    ratio = single and delay and delay["ok_per_s"] and single["ok_per_s"] / delay["ok_per_s"]
    rows.append(
        target(
            f">= {TARGET_VS_DELAY:g}x the delay()-per-request design (single-200, same run)",
            ratio,
            ratio and ratio >= TARGET_VS_DELAY,
            ratio and f"{ratio:.2f}x",
        )
    )
    ratio = single and bare and bare["ok_per_s"] and single["ok_per_s"] / bare["ok_per_s"]
    rows.append(
        target(
            f">= {TARGET_VS_BARE:.0%} of a bare Django view under the same serve.py settings",
            ratio,
            ratio and ratio >= TARGET_VS_BARE,
            ratio and f"{ratio:.0%}",
        )
    )
    for variant, client, minimum in (
        ("ours", "kafka-python", TARGET_BATCH_EVENTS_PER_S),
        ("confluent", "confluent-kafka", TARGET_CONFLUENT_EVENTS_PER_S),
    ):
        # The issue asks for events accepted *and* delivered: judge the end-to-end rate, which
        # counts the time the workers need to drain the queue after the load.
        cells = [_summary(results, variant, name) for name in ("batch-50", "batch-200")]
        cells = [summary for summary in cells if summary]
        best = max(cells, key=_delivered_rate) if cells else None
        rows.append(
            target(
                f"batch POST >= {minimum:,} events/s accepted and delivered with {client}",
                best,
                best and min(best["events_per_s"], _delivered_rate(best)) >= minimum,
                best
                and f"{best['events_per_s']:,.0f} events/s accepted; "
                f"{_delivered_rate(best):,.0f} events/s delivered, counting the queue drain",
            )
        )
    # A protocol check may find more than it counted accepted: requests in flight when wrk
    # stopped; only what is missing counts against it.
    expected = sum(check["expected"] for check in checks)
    found = expected - sum(check["lost"] for check in checks)
    rows.append(
        target(
            "every accepted event id is found in Kafka afterwards",
            checks or None,
            bool(checks) and all(check["ok"] for check in checks),
            f"{found:,} of {expected:,} found",
        )
    )
    for row in rows:
        row["met"] = None if row["value"] == "not measured" else bool(row["met"])
    return rows


# --- SVG charts -----------------------------------------------------------------------------


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 10 or value == 0:
        return f"{value:.0f}"
    return f"{value:.2g}"


def line_chart(title: str, series: list[tuple[str, list]], *, x_label: str, y_label: str) -> str:
    """An inline SVG line chart of (x, y) points per named series."""
    width, height, left, right, top, bottom = 420, 230, 52, 12, 26, 40
    points = [(x, y) for _, data in series for x, y in data if y is not None]
    if not points:
        return f"<div class='chart empty'>{escape(title)}: no data</div>"
    x_max = max(x for x, _ in points) or 1
    y_max = _nice_ceiling(max(y for _, y in points))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x):
        return left + plot_w * x / x_max

    def sy(y):
        return top + plot_h * (1 - y / y_max)

    parts = [
        f"<svg class='chart' viewBox='0 0 {width} {height}' width='{width}' height='{height}'"
        " xmlns='http://www.w3.org/2000/svg' font-family='sans-serif' font-size='10'>",
        f"<text x='{left}' y='14' font-size='12' font-weight='bold'>{escape(title)}</text>",
    ]
    for i in range(5):
        y = y_max * i / 4
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{sy(y):.1f}' y2='{sy(y):.1f}'"
            " stroke='#ddd'/>"
            f"<text x='{left - 4}' y='{sy(y) + 3:.1f}' text-anchor='end'>{_fmt(y)}</text>"
        )
    for i in range(5):
        x = x_max * i / 4
        parts.append(
            f"<text x='{sx(x):.1f}' y='{height - bottom + 14}' text-anchor='middle'>"
            f"{_fmt(x)}</text>"
        )
    parts.append(
        f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle'>"
        f"{escape(x_label)}</text>"
        f"<text x='12' y='{top + plot_h / 2}' text-anchor='middle' "
        f"transform='rotate(-90 12 {top + plot_h / 2})'>{escape(y_label)}</text>"
    )
    legend_x = left + 4
    for index, (name, data) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data if y is not None)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.6' points='{path}'/>")
        if len(data) == 1:
            x, y = data[0]
            parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{color}'/>")
        parts.append(
            f"<rect x='{legend_x}' y='{top + 2}' width='10' height='3' fill='{color}'/>"
            f"<text x='{legend_x + 13}' y='{top + 7}'>{escape(name)}</text>"
        )
        legend_x += 18 + 6 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(title: str, bins: list[dict]) -> str:
    """An inline SVG bar chart of shares of answers in log-spaced latency bins."""
    width, height, left, right, top, bottom = 420, 230, 52, 12, 26, 40
    if not bins:
        return f"<div class='chart empty'>{escape(title)}: no data</div>"
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_ceiling(max(b["share"] for b in bins) * 100)
    bar_w = plot_w / len(bins)
    parts = [
        f"<svg class='chart' viewBox='0 0 {width} {height}' width='{width}' height='{height}'"
        " xmlns='http://www.w3.org/2000/svg' font-family='sans-serif' font-size='10'>",
        f"<text x='{left}' y='14' font-size='12' font-weight='bold'>{escape(title)}</text>",
    ]
    for i in range(5):
        y = y_max * i / 4
        py = top + plot_h * (1 - y / y_max)
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{py:.1f}' y2='{py:.1f}' stroke='#ddd'/>"
            f"<text x='{left - 4}' y='{py + 3:.1f}' text-anchor='end'>{_fmt(y)}%</text>"
        )
    for index, b in enumerate(bins):
        bar_h = plot_h * b["share"] * 100 / y_max
        parts.append(
            f"<rect x='{left + index * bar_w:.1f}' y='{top + plot_h - bar_h:.1f}' "
            f"width='{max(1.0, bar_w - 1):.1f}' height='{bar_h:.1f}' fill='{COLORS[0]}'>"
            f"<title>{b['from_ms']:.2f}-{b['to_ms']:.2f} ms: {b['share']:.2%}</title></rect>"
        )
    for index in range(0, len(bins) + 1, max(1, len(bins) // 5)):
        edge = bins[min(index, len(bins) - 1)]["from_ms" if index < len(bins) else "to_ms"]
        parts.append(
            f"<text x='{left + index * bar_w:.1f}' y='{height - bottom + 14}' "
            f"text-anchor='middle'>{_fmt(edge)}</text>"
        )
    parts.append(
        f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle'>"
        "response time, ms (log scale)</text>"
        f"<text x='12' y='{top + plot_h / 2}' text-anchor='middle' "
        f"transform='rotate(-90 12 {top + plot_h / 2})'>share of answers</text></svg>"
    )
    return "".join(parts)


# --- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left;white-space:nowrap}
.met{background:#e4f6e4}.unmet{background:#fbe3e3}.na{background:#f3f3f3}
.warn{background:#fff4d6;border:1px solid #e6c200;padding:8px 12px}
.charts{display:flex;flex-wrap:wrap;gap:8px} .chart{border:1px solid #eee}
details{margin:6px 0} summary{cursor:pointer;font-weight:bold}
code{background:#f3f3f3;padding:1px 4px}
"""


def _table(headers: list[str], rows: list[list], left_columns: int = 1) -> str:
    head = "".join(
        f"<th class='{'l' if i < left_columns else ''}'>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        css = ""
        if row and isinstance(row[0], tuple):
            css, row = row[0][0], [row[0][1], *row[1:]]
        cells = "".join(
            f"<td class='{'l' if i < left_columns else ''}'>{value}</td>"
            for i, value in enumerate(row)
        )
        body.append(f"<tr class='{css}'>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _ms(value) -> str:
    return "" if value is None else f"{value:.1f}"


def _statuses(summary: dict) -> str:
    parts = [f"{status}: {count:,}" for status, count in summary["statuses"].items()]
    parts += [
        f"{kind}: {count:,}" for kind, count in summary.get("socket_errors", {}).items() if count
    ]
    return escape(", ".join(parts))


def _cpu(summary: dict) -> str:
    cpu = summary.get("cpu")
    if not cpu:
        return ""
    return (
        f"{cpu['server_ms_per_request']:.2f}; {cpu['server_cores']:.2f} / "
        f"{cpu['worker_cores_during_run']:.2f} / {cpu['wrk_cores']:.2f}"
    )


def kafka_summary(item: dict) -> str:
    """Accepted ids found in Kafka over accepted ids, and what went wrong, in a few words."""
    kafka = item.get("kafka")
    if kafka is None:
        return "n/a"
    found, expected = kafka["found"], kafka["expected"]
    problems = [f"MISSING {kafka['lost']:,}"] if kafka["lost"] else []
    if kafka.get("not_sent"):
        problems.append(f"{kafka['not_sent']:,} ids never sent")
    if kafka.get("partial_requests"):
        problems.append(f"{kafka['partial_requests']:,} requests only partly in Kafka")
    if problems and not kafka.get("queue_drained", True):
        problems.append("queue never drained: still in RabbitMQ")
    mark = "".join(f", {problem}" for problem in problems)[1:]
    if found > expected:  # a protocol's requests still in flight when wrk stopped
        mark += f" (+{found - expected:,} of requests in flight at the end)"
    return f"{min(found, expected):,}/{expected:,}{mark}" + (
        f" ({kafka['duplicates']} dup)" if kafka["duplicates"] else ""
    )


def _cell_rows(cells: list[dict]) -> list[list]:
    rows = []
    for cell in cells:
        s = cell["summary"]
        p = s["percentiles_ms"]
        drains = [d for d in cell.get("drain_s", []) if d is not None]
        undrained = len(cell.get("drain_s", [])) - len(drains)
        rows.append(
            [
                escape(cell["variant"]),
                escape(cell["scenario"]),
                f"{s['ok_per_s']:,.0f}",
                f"{s['events_per_s']:,.0f}",
                _ms(p["50"]),
                _ms(p["90"]),
                _ms(p["95"]),
                _ms(p["99"]),
                _ms(s["max_ms"]),
                "n/a" if s["apdex"] is None else f"{s['apdex']:.3f}",
                _cpu(s),
                _statuses(s),
                (f"{max(drains):.1f}" if drains else "")
                + (f" ({undrained} did not drain)" if undrained else ""),
                kafka_summary(cell),
            ]
        )
    return rows


CELL_HEADERS = [
    "variant", "scenario", "2xx req/s", "events/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
    "max ms", "APDEX", "CPU: server ms/req; cores used by server / worker / wrk",
    "answers by status / socket errors", "queue drain s (max)",
    "Kafka found/accepted",
]  # fmt: skip


def _cell_charts(cell: dict) -> str:
    s = cell["summary"]
    series = s["series"]
    throughput = [
        ("2xx/s", [(p["t_s"], p["ok_per_s"]) for p in series]),
        ("all answers/s", [(p["t_s"], p["answers_per_s"]) for p in series]),
    ]
    if cell["kind"] == "batch":
        throughput = [("events/s", [(p["t_s"], p["events_per_s"]) for p in series])]
    latency = [
        (name, [(p["t_s"], p[f"{name}_ms"]) for p in series])
        for name in ("p50", "p90", "p99", "max")
    ]
    return (
        "<div class='charts'>"
        + line_chart("throughput over time", throughput, x_label="s of load", y_label="per s")
        + line_chart("latency over time", latency, x_label="s of load", y_label="ms")
        + histogram_chart("response-time distribution", s["histogram"])
        + "</div>"
    )


def render(results: dict) -> str:
    run, machine = results["run"], results["machine"]
    cells = results["cells"]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Ingest gateway benchmark {escape(run['started_at'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Ingest gateway benchmark</h1>",
        f"<p>Started {escape(run['started_at'])}, finished {escape(run['finished_at'])}. "
        f"Command: <code>{escape(run['command'])}</code> (from the repository root, in the "
        "bench virtualenv; <code>make bench</code> runs it). "
        f"Commit {escape(machine['git_commit'])}"
        f"{' with uncommitted changes to the gateway' if machine['git_dirty'] else ''}.</p>",
    ]
    busy = machine["cpu_busy_before_start"]
    if run["quick"] or busy > 0.15 or machine["load_average_at_start"][0] > 1:
        out.append(
            "<p class='warn'>"
            + ("<b>Quick run</b>: too short for conclusions. " if run["quick"] else "")
            + f"The machine was not quiet: {busy:.0%} of its CPU was busy in the second before "
            f"the run, load average {machine['load_average_at_start'][0]:.1f} at start and "
            f"{machine['load_average_at_end'][0]:.1f} at the end. Other processes share these "
            f"{machine['cpus']} cores, so absolute figures are low and noisy; ratios measured "
            "in the same interleaved run are more telling.</p>"
        )
    if not cells:  # --capacity-only: the search is all there is
        out.append(_capacity_section(results))
    out.append("<h2>Targets (this run)</h2>")
    out.append(
        _table(
            ["target", "measured", "met"],
            [
                [
                    (
                        "na" if t["met"] is None else "met" if t["met"] else "unmet",
                        escape(t["text"]),
                    ),
                    escape(str(t["value"])),
                    "n/a" if t["met"] is None else "yes" if t["met"] else "no",
                ]
                for t in results["targets"]
            ],
        )
    )
    out.append(_method(results))
    out.append("<h2>All scenarios (closed loop: wrk, latency = service time)</h2>")
    out.append(_table(CELL_HEADERS, _cell_rows(cells), left_columns=2))
    out.append(_comparison_section(results))
    out.append(_protocol_section(results))
    out.append(_open_loop_section(results))
    if cells:
        out.append(_capacity_section(results))
    out.append("<h2>Per scenario</h2>")
    for cell in cells:
        is_ours = cell["variant"] == "ours"
        out.append(
            f"<details{' open' if is_ours else ''}><summary>{escape(cell['variant'])} / "
            f"{escape(cell['scenario'])}: {escape(cell['label'])}</summary>"
            + _table(CELL_HEADERS, _cell_rows([cell]), left_columns=2)
            + _cell_charts(cell)
            + "</details>"
        )
    out.append(_environment(results))
    out.append("</body></html>")
    return "\n".join(out)


def _method(results: dict) -> str:
    run = results["run"]
    return f"""
<h2>Method</h2>
<ul>
<li><b>Closed loop</b> for every scenario table and chart except the fixed-rate section: wrk
keeps N connections busy and each sends its next request only when the previous answer arrived,
so its latency is service time and hides queueing a real open population of clients would see
(coordinated omission). wrk runs on the same {results["machine"]["cpus"]} cores as the server and
takes part of them: the CPU column gives the cores each side used during the run (CPU seconds of
the process tree from /proc over wall seconds; the server's CPU per request includes its
background threads).</li>
<li><b>Fixed rate (open loop)</b>: a Python asyncio generator sends single-event POSTs at
{run["fixed_rate"]:.0f}/s on up to {run["fixed_connections"]} connections whatever the answers
take; latency counts from each request's <i>intended</i> send time, so a stall shows up in full.
</li>
<li>Scenarios: <code>GET /api/v1/show/?id=...</code> (the seed's tiny tracking-pixel query; it
carries only the event id, about 25 bytes), a single-event POST of about 200 bytes, a batch POST
of 100 such events (about 20 kB); each at 50 and 200 connections; ack level <code>durable</code>
(the default: 202 only after RabbitMQ confirmed the batch); for <code>ours</code> only, one
batch scenario per client protocol (see "Client protocols vs native API"). Production mode
requires API keys:
each variant's database gets a source without rate limits and every request carries its
<code>X-Api-Key</code>.</li>
<li>Every variant runs at once on services of the bench's own (one Tansu, a PostgreSQL database
and a RabbitMQ queue per variant, {run["worker_processes"]} Celery worker process(es) x
{run["worker_threads"]} threads per variant that needs one) and waits idle while another is
measured. Each scenario runs in {run["rounds"]} round(s) of one {run["seconds_per_round"]} s wrk
run, scenario by scenario so the variants compared on one scenario run close in time, and every
other round in reverse order (ABBA) so drift of the machine hits every variant alike. After each
run the bench waits until the variant's queue is drained before the next, so the workers'
catch-up never overlaps another measurement; the drain time is reported, and "end-to-end
events/s" counts it.</li>
<li><b>Rates</b> (2xx req/s, events/s) count answers after the first {run["warmup_s"]:g} s of
each run: a closed loop starts with every connection sending at once, and wrk drops the answers
still in flight when it stops, which would bias short runs against slow designs.</li>
<li><b>Latency</b>: the table's p50-p99 and max are wrk's own exact histogram of all answers
(merged over rounds by request counts). The time series and the distribution chart use
per-request latencies the Lua script measures itself (LuaJIT clock): every request is keyed by
its unique event id, which each 2xx answer lists, so request and answer pair up exactly; error
answers carry no id and appear only in wrk's histogram. APDEX T = {run["apdex_ms"]:g} ms
(satisfied &lt;= T, tolerating &lt;= 4T) over all requests: non-2xx answers and socket errors
count as frustrated. Time series buckets: {run["bucket_s"]:g} s.</li>
<li><b>Kafka check</b>: every event id is unique (wrk's Lua script numbers them per run, thread
and request). The script records the ids the server listed in each 2xx answer, so the expected
set is exactly what was accepted. After the load, the bench reads every topic back from the
beginning (assign + seek_to_beginning) and counts accepted ids found and duplicated.</li>
</ul>"""


def _comparison_section(results: dict) -> str:
    rows = []
    for row in results["comparisons"]:
        ratio = row["ours_over_variant"]
        rows.append(
            [
                escape(row["variant"]),
                escape(row["label"]),
                escape(row["scenario"]),
                f"{row['rate']:,.0f} {row['unit']}",
                f"{row['ours_rate']:,.0f}",
                "" if ratio is None else f"{ratio:.2f}x",
                f"{row['variant_over_ours']:.0%}" if row["variant_over_ours"] is not None else "",
                _ms(row["p99_ms"]),
                _ms(row["ours_p99_ms"]),
            ]
        )
    skipped = "".join(
        f"<li><b>{escape(item['variant'])}</b> ({escape(item['label'])}): "
        f"{escape(item['reason'])}</li>"
        for item in results["skipped"]
    )
    return (
        "<h2>Comparisons (same run, interleaved)</h2>"
        "<p>Ratios use 2xx requests per second (events per second for batch scenarios).</p>"
        + _table(
            [
                "variant",
                "design / settings",
                "scenario",
                "variant rate",
                "ours",
                "ours / variant",
                "variant / ours",
                "variant p99 ms",
                "ours p99 ms",
            ],  # fmt: skip
            rows,
            left_columns=3,
        )
        + (f"<p>Not compared in this run:</p><ul>{skipped}</ul>" if skipped else "")
    )


PROTOCOL_HEADERS = [
    "scenario", "endpoint", "2xx answered when", "connections", "events/s accepted",
    "vs native", "2xx req/s", "p50 ms", "p99 ms", "non-2xx", "Kafka found/accepted",
]  # fmt: skip


def _protocol_cells(row: dict) -> list:
    return [
        ("met" if row["kafka_ok"] else "unmet", escape(row["scenario"])),
        escape(row["endpoint"]),
        escape(row["answers_when"]),
        str(row["connections"]),
        f"{row['events_per_s']:,.0f}",
        escape(row["share_of_native"]),
        f"{row['ok_per_s']:,.0f}",
        _ms(row["p50_ms"]),
        _ms(row["p99_ms"]),
        f"{row['non_2xx']:,}",
        escape(row["kafka"]),
    ]


def _protocol_section(results: dict) -> str:
    rows = results.get("protocols") or []
    if not rows:
        return "<h2>Client protocols vs native API, same run</h2><p>Not in this run.</p>"
    return (
        "<h2>Client protocols vs native API, same run</h2>"
        f"<p>Each protocol scenario sends batches of 100 of the same ~200-byte page view per "
        f"request as the native batch scenario, at the same {PROTOCOL_CONNECTIONS} connections, "
        "to the <code>ours</code> variant, in the same interleaved rounds. Events/s accepted: 2xx "
        "answers x 100 per second after the warm-up, as for the native scenarios. Latency: wrk's "
        "own percentiles of all answers (the protocols' answers carry no ids to pair them with "
        "their requests, so there are no per-request series or APDEX). Confluent REST Proxy v2 "
        "answers only once Kafka acknowledged every record (the <code>delivered</code> ack "
        "level), so its latency includes the worker's delivery and it is expected to be slower. "
        "Kafka check: the answers list no ids, so every id sent is recorded; the topic must hold "
        "at least 2xx x 100 of them, no other, and each request's ids all or none (Confluent's "
        "records get an id of the gateway's own as <code>event-id</code>, so its check reads the "
        "value's <code>id</code>). Requests still in flight when wrk stopped may have been "
        'accepted too: they are shown as "+N".</p>'
        + _table(
            PROTOCOL_HEADERS,
            [_protocol_cells(row) for row in rows],
            left_columns=3,
        )
    )


def _open_loop_section(results: dict) -> str:
    runs = results["open_loop"]
    if not runs:
        return "<h2>Fixed-rate runs</h2><p>None in this run.</p>"
    rows, charts = [], []
    for item in runs:
        s = item["summary"]
        p, service = s["percentiles_ms"], s["service_percentiles_ms"]
        rows.append(
            [
                escape(item["variant"]),
                str(item["round"]),
                f"{s['rate']:.0f}",
                f"{s['ok_per_s']:,.0f}",
                _ms(p["50"]),
                _ms(p["90"]),
                _ms(p["95"]),
                _ms(p["99"]),
                _ms(s["max_ms"]),
                _ms(service["99"]),
                f"{s['apdex']:.3f}",
                f"{s['late_sends']:,}",
                _ms(s.get("max_schedule_lag_ms")),
                escape(", ".join(f"{k}: {v:,}" for k, v in s["statuses"].items())),
                kafka_summary(item),
            ]
        )
        series = s["series"]
        charts.append(
            f"<details open><summary>{escape(item['variant'])} at {s['rate']:.0f}/s, round "
            f"{item['round']}</summary><div class='charts'>"
            + line_chart(
                "throughput over time",
                [
                    ("sent/s", [(q["t_s"], q["sent_per_s"]) for q in series]),
                    ("2xx/s", [(q["t_s"], q["ok_per_s"]) for q in series]),
                ],
                x_label="s",
                y_label="per s",
            )
            + line_chart(
                "latency from intended send time",
                [
                    (name, [(q["t_s"], q[f"{name}_ms"]) for q in series])
                    for name in ("p50", "p90", "p99", "max")
                ],
                x_label="s (by intended send time)",
                y_label="ms",
            )
            + histogram_chart("response-time distribution (exact)", s["histogram"])
            + "</div></details>"
        )
    return (
        "<h2>Fixed-rate runs (open loop; latency from the intended send time)</h2>"
        + _table(
            [
                "variant",
                "round",
                "rate/s",
                "2xx/s",
                "p50 ms",
                "p90 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "p99 from actual send",
                "APDEX",
                "sends that waited for a connection",
                "answers by status (0: connection error, -1: timeout)",
                "Kafka found/accepted",
            ],  # fmt: skip
            rows,
        )
        + "".join(charts)
    )


def capacity_workers(run: dict) -> int:
    """Worker processes per stack in the capacity search (runs before it had their own: one)."""
    return run.get("capacity_worker_processes") or run["worker_processes"]


def capacity_text_table(results: dict) -> str:
    """The "Sustained capacity" table as aligned text, for the log."""
    rows = [list(capacity.TABLE_HEADERS), *capacity.table_rows(results["capacity"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


STEP_HEADERS = [
    "step",
    "req/s",
    "offered events/s",
    "2xx events/s",
    "delivered events/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "backlog slope /s",
    "backlog max",
    "in Kafka after s",
    "server CPU us/event",
    "worker CPU us/event",
    "bench process cores",
    "generator late",
    "load",
    "verdict",
]


def _step_cells(index: int, step: dict) -> list:
    backlog, delivered, cpu = step["backlog"], step["delivered"], step["cpu"]
    verdict = "holds" if step["holds"] else "fails: " + "; ".join(step["reasons"])
    return [
        (
            "met" if step["holds"] else "unmet",
            f"{index + 1}{' (repeat)' if step.get('repeat') else ''}",
        ),
        f"{step['rate']:,.0f}",
        f"{step['offered_events_per_s']:,.0f}",
        f"{step['ok_events_per_s']:,.0f}",
        "" if delivered["events_per_s"] is None else f"{delivered['events_per_s']:,.0f}",
        _ms(step["p50_ms"]),
        _ms(step["p99_ms"]),
        _ms(step["max_ms"]),
        "" if backlog["slope_per_s"] is None else f"{backlog['slope_per_s']:+.2f}",
        "" if backlog["max"] is None else f"{backlog['max']:,}",
        "" if delivered["within_s"] is None else f"{delivered['within_s']:.1f}",
        f"{cpu['server_us_per_event']:,.0f}",
        f"{cpu['worker_us_per_event']:,.0f}",
        f"{cpu['generator_cores']:.2f}",
        f"{step['max_schedule_lag_ms']:.0f} ms" if step["generator_late"] else "",
        f"{step['load_average']:.1f}",
        escape(verdict),
    ]


def _capacity_charts(result: dict) -> str:
    steps = sorted(result["steps"], key=lambda step: step["rate"])

    def by_rate(value) -> list:
        return [(step["offered_events_per_s"], value(step)) for step in steps]

    return (
        "<div class='charts'>"
        + line_chart(
            "latency from intended send time, per step",
            [
                ("p50", by_rate(lambda step: step["p50_ms"])),
                ("p99", by_rate(lambda step: step["p99_ms"])),
                (f"limit {capacity.P99_LIMIT_MS:.0f}", by_rate(lambda _: capacity.P99_LIMIT_MS)),
            ],
            x_label="offered events/s",
            y_label="ms",
        )
        + line_chart(
            "broker backlog, per step",
            [
                ("slope, messages/s", by_rate(lambda step: step["backlog"]["slope_per_s"])),
                ("max depth", by_rate(lambda step: step["backlog"]["max"])),
            ],
            x_label="offered events/s",
            y_label="messages",
        )
        + line_chart(
            "offered, accepted and delivered, per step",
            [
                ("offered", by_rate(lambda step: step["offered_events_per_s"])),
                ("2xx", by_rate(lambda step: step["ok_events_per_s"])),
                ("delivered", by_rate(lambda step: step["delivered"]["events_per_s"])),
            ],
            x_label="offered events/s",
            y_label="events/s",
        )
        + "</div>"
    )


def _capacity_section(results: dict) -> str:
    found = results.get("capacity") or []
    if not found:
        return "<h2>Sustained capacity</h2><p>Not measured in this run.</p>"
    run = results["run"]
    parts = [
        "<h2>Sustained capacity (open loop; the highest rate that held)</h2>",
        f"<p>Each stack runs {capacity_workers(run)} "
        f"Celery worker process(es) x {run['worker_threads']} threads for the search. "
        f"Each step offers one rate for {run['capacity_seconds']:.0f} s at "
        f"{capacity.CONNECTIONS} connections at most and holds when every request is answered "
        "2xx, the broker backlog is not growing (least-squares slope of the queue depth, sampled "
        "every second, over the step's second half at most "
        f"{capacity.BACKLOG_GROWTH_LIMIT_PER_S:g} message/s), p99 from the intended send time is "
        f"at most {capacity.P99_LIMIT_MS:.0f} ms, and the topic holds every accepted event "
        f"{capacity.DELIVERY_LIMIT_S:.0f} s after the last answer (every id is checked once the "
        f"queues drained). The search rises x{capacity.RISE_FACTOR:g} from a start rate until a "
        f"step fails, then bisects {run.get('capacity_bisections', capacity.BISECTIONS)} times; a "
        "failed step runs once more before it counts. Delivered "
        "events/s: the slope of the step's ids found in the topic over the step's second half. "
        "CPU per event: CPU seconds of the server's and the workers' "
        "process trees (from /proc) over the events accepted in the step, the workers' counted "
        "until the last event was in Kafka. The load generator (Python asyncio) and the Kafka tail "
        "run in the bench's process, on the same cores (its cores per step are shown); a step "
        f"whose generator fell over {capacity.GENERATOR_LATE_MS:.0f} ms behind its schedule is "
        'marked "generator late".</p>',
        _table(list(capacity.TABLE_HEADERS), capacity.table_rows(found), left_columns=2),
    ]
    for result in found:
        parts.append(
            f"<details open><summary>{escape(result['variant'])} / {escape(result['scenario'])}: "
            f"{escape(result['label'])}; the search started at "
            f"{result.get('start_rate', 0):,.0f} req/s</summary>"
            + _table(
                STEP_HEADERS,
                [_step_cells(index, step) for index, step in enumerate(result["steps"])],
            )
            + _capacity_charts(result)
            + "</details>"
        )
    return "".join(parts)


def _environment(results: dict) -> str:
    machine = results["machine"]
    facts = [
        ["CPU", escape(machine["cpu_model"])],
        ["CPUs", str(machine["cpus"])],
        ["memory", f"{machine['memory_gib']} GiB"],
        ["OS / kernel", escape(f"{machine['os']} / {machine['kernel']}")],
        ["Python", escape(f"{machine['python']} ({machine['python_executable']})")],
        ["load generator", escape(machine["wrk"])],
        [
            "load average start / end",
            f"{machine['load_average_at_start'][0]:.2f} / {machine['load_average_at_end'][0]:.2f}",
        ],
        ["CPU busy before start", f"{machine['cpu_busy_before_start']:.0%}"],
    ]
    facts += [[escape(name), escape(str(version))] for name, version in machine["packages"].items()]
    variants = [
        [
            escape(v["name"]),
            f"<code>{escape(v['command'])}</code>",
            escape(v["settings"]),
            escape(" ".join(f"{k}={val}" for k, val in v["env"].items())),
            "yes" if v["worker"] else "no",
        ]
        for v in results["variants"]
    ]
    return (
        "<h2>Machine and versions</h2>"
        + _table(["", "value"], facts)
        + "<h2>Variants</h2>"
        + _table(["variant", "server command", "settings", "env", "Celery worker"], variants, 5)
    )


# --- Markdown for docs/BENCHMARKS.md ---------------------------------------------------------


def markdown(results: dict) -> str:
    """The run's figures as Markdown, to paste into docs/BENCHMARKS.md."""
    run, machine = results["run"], results["machine"]
    lines = [
        f"Run of {run['started_at']} (commit {machine['git_commit']}"
        f"{', gateway with uncommitted changes' if machine['git_dirty'] else ''}"
        f"{', quick' if run['quick'] else ''}): `{run['command']}`",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, "
        f"{machine['os']}, Python {machine['python']}, {machine['wrk']}. Load average "
        f"{machine['load_average_at_start'][0]:.1f} at start, "
        f"{machine['load_average_at_end'][0]:.1f} at the end; "
        f"{machine['cpu_busy_before_start']:.0%} CPU busy in the second before the start.",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for target in results["targets"]:
        met = {True: "yes", False: "no", None: "n/a"}[target["met"]]
        lines.append(f"| {target['text']} | {target['value']} | {met} |")
    lines += [
        "",
        "Closed loop (wrk); rates after a warm-up; percentiles of all answers, ms:",
        "",
        "| variant | scenario | 2xx req/s | events/s | end-to-end events/s | p50 | p90 | p95 | p99 "
        "| max | APDEX | non-2xx | server CPU ms/req | Kafka found/accepted |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for cell in results["cells"]:
        s, p = cell["summary"], cell["summary"]["percentiles_ms"]
        end_to_end = s.get("end_to_end_events_per_s")
        cpu = s.get("cpu", {}).get("server_ms_per_request")
        apdex = s["apdex"]
        lines.append(
            f"| {cell['variant']} | {cell['scenario']} | {s['ok_per_s']:,.0f} | "
            f"{s['events_per_s']:,.0f} | {'' if end_to_end is None else f'{end_to_end:,.0f}'} | "
            f"{p['50']:.1f} | {p['90']:.1f} | {p['95']:.1f} | {p['99']:.1f} | {s['max_ms']:.1f} | "
            f"{'n/a' if apdex is None else f'{apdex:.2f}'} | "
            f"{s['requests'] - s['ok']} | "
            f"{'' if cpu is None else f'{cpu:.2f}'} | "
            f"{kafka_summary(cell)} |"
        )
    lines += [
        "",
        "Ratios, same run (ours / variant; events/s for batch scenarios):",
        "",
        "| variant | scenario | variant rate | ours | ours / variant | end-to-end events/s, "
        "variant / ours |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in results["comparisons"]:
        ratio = row["ours_over_variant"]
        theirs, ours = row["end_to_end_events_per_s"], row["ours_end_to_end_events_per_s"]
        end_to_end = f"{theirs:,.0f} / {ours:,.0f}" if theirs and ours else ""
        lines.append(
            f"| {row['variant']} | {row['scenario']} | {row['rate']:,.0f} | "
            f"{row['ours_rate']:,.0f} | {'' if ratio is None else f'{ratio:.2f}x'} | "
            f"{end_to_end} |"
        )
    if results.get("protocols"):
        lines += [
            "",
            "Client protocols vs native API, same run (batches of 100 events, wrk's percentiles):",
            "",
            "| " + " | ".join(PROTOCOL_HEADERS) + " |",
            "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in results["protocols"]:
            lines.append(
                f"| {row['scenario']} | {row['endpoint']} | {row['answers_when']} | "
                f"{row['connections']} | {row['events_per_s']:,.0f} | {row['share_of_native']} | "
                f"{row['ok_per_s']:,.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['non_2xx']:,} | {row['kafka']} |"
            )
    for item in results["open_loop"]:
        s = item["summary"]
        lines.append("")
        lines.append(
            f"Fixed rate (open loop, latency from the intended send time): {item['variant']} at "
            f"{s['rate']:.0f}/s, round {item['round']}: {s['ok_per_s']:,.0f} 2xx/s, p50 "
            f"{s['percentiles_ms']['50']:.1f} ms, p99 {s['percentiles_ms']['99']:.1f} ms, "
            f"max {s['max_ms']:.1f} ms, errors {s['errors']}."
        )
    if results.get("capacity"):
        lines += [
            "",
            f"Sustained capacity (open loop, {results['run']['capacity_seconds']:.0f} s steps, "
            f"{capacity_workers(results['run'])} worker process(es) per stack; the highest rate "
            "that held):",
            "",
            "| " + " | ".join(capacity.TABLE_HEADERS) + " |",
            "| --- | --- |" + " ---: |" * (len(capacity.TABLE_HEADERS) - 2),
            *("| " + " | ".join(row) + " |" for row in capacity.table_rows(results["capacity"])),
        ]
    if results["skipped"]:
        lines.append("")
        lines.append(
            "Not compared: "
            + "; ".join(f"{item['variant']} ({item['reason']})" for item in results["skipped"])
            + "."
        )
    return "\n".join(lines) + "\n"
