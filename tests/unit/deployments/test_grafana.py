"""``deployments/grafana/cortex-ray.json``: a Grafana dashboard (JSON model) over cortex-ray's own
metrics, checked against :data:`cortex_ray.metrics.catalogue.CATALOGUE`.

How Ray 2.60 names what ``ray.util.metrics`` records, on its Prometheus endpoint: the name gets
Ray's ``ray_`` prefix; a counter is exported as a Prometheus counter, ``ray_<name>_total``
(OpenTelemetry, the default, exports only that; the legacy OpenCensus path also exports a
deprecated gauge ``ray_<name>``, so queries use ``_total``); a histogram as
``ray_<name>_bucket``/``_sum``/``_count``; a gauge as ``ray_<name>``. The unit is ``1``, which
adds no suffix. Each series has the metric's tags, plus the global tags Ray's core worker adds
(:data:`RAY_LABELS`) and the target labels Prometheus adds when scraping (:data:`SCRAPE_LABELS`).

Every ``cortex_ray`` name in a query must be a catalogue metric with the suffix of its kind,
every label in a matcher, ``by``/``without``/``on``/``ignoring`` clause or legend one the metric
has, and every catalogue metric on some panel. The checks return lists of problems; the
``test_check_catches`` cases break a copy of the dashboard to show each check can fail.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.metrics.catalogue import CATALOGUE, MetricSpec

DASHBOARD = Path(__file__).resolve().parents[3] / "deployments" / "grafana" / "cortex-ray.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
API_QUERY = "label_values(ray_cortex_ray_requests_total, api_name)"
API_FILTER = 'api_name=~"$api_name"'
ROWS = ["Requests", "Model cache", "Live reloading", "AsyncAPI"]
PANEL_TYPES = {"row", "timeseries", "stat"}

RAY_LABELS = {"SessionName", "NodeAddress", "Version", "Component", "WorkerId"}
"""Ray's global tags on every metric a worker exports (``WorkerId`` is dropped by default since
Ray 2.53, ``RAY_metric_cardinality_level=recommended``)."""
SCRAPE_LABELS = {"instance", "job"}
"""What Prometheus adds to every series it scrapes."""

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*(?:,|$)')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_]\w*)\s*\)$")
LEGEND = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


# --- reading the dashboard ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query) for the query variables."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            yield f"variable {var.get('name')}", query.get("query", "") if isinstance(query, dict) else query
            if var.get("definition"):
                yield f"variable {var.get('name')} definition", var["definition"]


def masked(expr: str) -> str:
    """``expr`` with the insides of string literals blanked (same length), so that brackets and
    words in label values or regexes are not read as PromQL."""
    return STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)


def resolve(name: str) -> tuple[MetricSpec, str] | str:
    """The catalogue entry and suffix of an exported name, or why it is none."""
    if not name.startswith("ray_cortex_ray_"):
        return f"{name}: not an exported cortex-ray name (Ray exports them as ray_cortex_ray_...)"
    base = name[len("ray_") :]
    for kind, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            if suffix and not base.endswith(suffix):
                continue
            spec = CATALOGUE.get(base[: len(base) - len(suffix)] if suffix else base)
            if spec is not None and spec.kind == kind:
                return spec, suffix
    near = [s for s in CATALOGUE.values() if base.startswith(s.name)]
    if near:
        spec = near[0]
        wanted = " or ".join(f"ray_{spec.name}{s}" for s in SUFFIXES[spec.kind])
        return f"{name}: {spec.name} is a {spec.kind}, exported as {wanted}"
    return f"{name}: not in the catalogue"


def names_in(text: str) -> list[str]:
    """Every identifier in ``text`` that mentions cortex_ray (in a string literal too)."""
    return [m.group() for m in IDENTIFIER.finditer(text) if "cortex_ray" in m.group()]


def allowed_labels(name: str) -> set[str] | None:
    found = resolve(name)
    if isinstance(found, str):
        return None  # reported by the name check
    spec, suffix = found
    return set(spec.tags) | RAY_LABELS | SCRAPE_LABELS | ({"le"} if suffix == "_bucket" else set())


def matching_close(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced brackets in {text!r}")


def matching_open(text: str, end: int) -> int:
    depth = 0
    for i in range(end, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced brackets in {text!r}")


def grouping_scope(text: str, match: re.Match[str]) -> str:
    """The part of ``text`` a grouping clause applies to: an aggregation's argument for
    ``by``/``without`` (``sum by (x) (...)`` or ``sum(...) by (x)``), the whole expression for
    vector matching."""
    if match.group(1) not in ("by", "without"):
        return text
    after = match.end()
    while after < len(text) and text[after].isspace():
        after += 1
    if after < len(text) and text[after] == "(":
        return text[after : matching_close(text, after) + 1]
    before = text[: match.start()].rstrip()
    if before.endswith(")"):
        return before[matching_open(before, len(before) - 1) :]
    raise ValueError(f"cannot tell what {match.group()!r} aggregates in {text!r}")


# --- the checks ---------------------------------------------------------------------------------


def structure_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    if dashboard.get("title") != "cortex-ray" or dashboard.get("uid") != "cortex-ray":
        problems.append("title and uid must be cortex-ray")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')!r}: expected a current one (~39)")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("templating: no datasource variable of type datasource with query prometheus")
    api = variables.get("api_name", {})
    api_query = api.get("query")
    api_query = api_query.get("query") if isinstance(api_query, dict) else api_query
    if api.get("type") != "query" or api_query != API_QUERY:
        problems.append(f"templating: no api_name query variable from {API_QUERY}")
    if not (api.get("multi") and api.get("includeAll")):
        problems.append("templating: api_name must be multi-select with All")
    if api.get("datasource") != DATASOURCE:
        problems.append(f"templating: api_name's datasource is {api.get('datasource')!r}, not {DATASOURCE}")
    rows = [p.get("title") for p in all_panels(dashboard) if p.get("type") == "row"]
    if rows != ROWS:
        problems.append(f"rows {rows}, expected {ROWS}")
    for panel in all_panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: type {panel.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource {panel.get('datasource')!r}, not {DATASOURCE}")
        if not panel.get("targets"):
            problems.append(f"{where}: no queries")
        for target in panel.get("targets", []):
            if target.get("datasource", DATASOURCE) != DATASOURCE:
                problems.append(f"{where}: a target's datasource is {target['datasource']!r}")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
    return problems


def id_problems(dashboard: dict[str, Any]) -> list[str]:
    ids = [p.get("id") for p in all_panels(dashboard)]
    problems = [f"panel id {i!r} is not a positive integer" for i in ids if not isinstance(i, int) or i < 1]
    problems += [
        f"panel id {i} is used {ids.count(i)} times" for i in sorted(set(ids), key=str) if ids.count(i) > 1
    ]
    return problems


def layout_problems(dashboard: dict[str, Any]) -> list[str]:
    problems, taken = [], {}
    for panel in dashboard.get("panels", []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        pos = panel.get("gridPos", {})
        if not all(isinstance(pos.get(k), int) for k in "hwxy"):
            problems.append(f"{where}: gridPos {pos!r} lacks h, w, x or y")
            continue
        if pos["x"] < 0 or pos["w"] < 1 or pos["h"] < 1 or pos["x"] + pos["w"] > 24:
            problems.append(f"{where}: gridPos {pos} is outside the 24 columns")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in taken:
                    problems.append(f"{where} overlaps {taken[(x, y)]}")
                    break
                taken[(x, y)] = where
            else:
                continue
            break
    return problems


def name_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    for where, text in [*queries(dashboard), *variable_queries(dashboard)]:
        for name in names_in(text):
            found = resolve(name)
            if isinstance(found, str):
                problems.append(f"{where}: {found}")
    return problems


def label_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []

    def check(where: str, labels: list[str], scope: str, what: str) -> None:
        names = names_in(scope)
        if not names:
            problems.append(f"{where}: {what} over no cortex-ray metric")
        for name in names:
            allowed = allowed_labels(name)
            if allowed is None:
                continue
            for label in labels:
                if label not in allowed:
                    problems.append(f"{where}: {what} uses {label!r}, which {name} does not have")

    for where, expr in queries(dashboard):
        text = masked(expr)
        for selector in SELECTOR.finditer(text):
            body = expr[selector.start(2) : selector.end(2)]
            labels, rest = [], body
            while rest.strip():
                matcher = MATCHER.match(rest)
                if matcher is None:
                    problems.append(f"{where}: cannot read the label matchers {body!r}")
                    break
                labels.append(matcher.group(1))
                rest = rest[matcher.end() :]
            check(where, labels, selector.group(1), f"matcher {{{body}}}")
        named = {m.start(2) - 1 for m in SELECTOR.finditer(text)}
        if any(m.start() not in named for m in re.finditer(r"\{", text)):
            problems.append(f"{where}: a selector without a metric name ({{...}}): its labels go unchecked")
        for grouping in GROUPING.finditer(text):
            labels = [label.strip() for label in grouping.group(2).split(",") if label.strip()]
            check(where, labels, grouping_scope(text, grouping), f"{grouping.group(1)} ({grouping.group(2)})")
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            legend = LEGEND.findall(target.get("legendFormat", ""))
            if legend:
                where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
                check(where, legend, target["expr"], f"legend {target['legendFormat']!r}")
    for where, query in variable_queries(dashboard):
        found = LABEL_VALUES.match(query.strip())
        if found is None:
            problems.append(f"{where}: {query!r} is not label_values(metric, label)")
        else:
            check(where, [found.group(2)], found.group(1), "label_values")
    return problems


def filter_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    for where, expr in queries(dashboard):
        text = masked(expr)
        for name in IDENTIFIER.finditer(text):
            if "cortex_ray" not in name.group():
                continue
            selector = SELECTOR.match(text, name.start())
            body = "" if selector is None else expr[selector.start(2) : selector.end(2)]
            if API_FILTER not in [matcher.strip() for matcher in body.split(",")]:
                problems.append(f"{where}: {name.group()} is not filtered by {API_FILTER}")
    return problems


def coverage_problems(dashboard: dict[str, Any]) -> list[str]:
    shown = set()
    for _, expr in queries(dashboard):
        for name in names_in(expr):
            found = resolve(name)
            if not isinstance(found, str):
                shown.add(found[0].name)
    return [f"{name} ({CATALOGUE[name].kind}) is on no panel" for name in CATALOGUE if name not in shown]


CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "structure": structure_problems,
    "ids": id_problems,
    "layout": layout_problems,
    "names": name_problems,
    "labels": label_problems,
    "filter": filter_problems,
    "coverage": coverage_problems,
}


# --- the dashboard passes -----------------------------------------------------------------------


def test_file_is_json_of_a_dashboard(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard, dict)
    assert isinstance(dashboard.get("panels"), list) and dashboard["panels"]
    assert isinstance(dashboard.get("templating", {}).get("list"), list)


@pytest.mark.parametrize("check", list(CHECKS))
def test_dashboard(dashboard: dict[str, Any], check: str) -> None:
    assert CHECKS[check](dashboard) == []


def test_every_query_is_read(dashboard: dict[str, Any]) -> None:
    """The checks see every panel's queries (none hidden where the readers do not look)."""
    exprs = [expr for _, expr in queries(dashboard)]
    assert len(exprs) >= len(CATALOGUE)
    assert all(names_in(expr) for expr in exprs)


# --- and each check can fail --------------------------------------------------------------------


def replace_in_query(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                if old in target["expr"]:
                    target["expr"] = target["expr"].replace(old, new, 1)
                    return
        raise AssertionError(f"no query contains {old!r}")

    return mutate


def set_on_panel(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        panels = [p for p in all_panels(dashboard) if p.get("type") != "row"]
        panels[index][key] = value

    return mutate


def drop_panels_with(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        keep = [p for p in dashboard["panels"] if not any(name in t["expr"] for t in p.get("targets", []))]
        assert len(keep) < len(dashboard["panels"])
        dashboard["panels"] = keep

    return mutate


def set_variable(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        next(v for v in dashboard["templating"]["list"] if v["name"] == name)[key] = value

    return mutate


RETRIES = (
    'sum by (api_name) (rate(ray_cortex_ray_async_retried_total{api_name=~"$api_name"}[$__rate_interval]))'
)
RETRIES_POSTFIX = (
    'sum(rate(ray_cortex_ray_async_retried_total{api_name=~"$api_name"}[$__rate_interval])) by (replica)'
)
REQUESTS_BY_API = 'sum by (api_name) (rate(ray_cortex_ray_requests_total{api_name=~"$api_name"}[5m]))'
QUEUED = 'ray_cortex_ray_async_queued{api_name=~"$api_name"}'

BROKEN = {
    "typo in a name": (
        "names",
        replace_in_query("ray_cortex_ray_requests_total", "ray_cortex_ray_request_total"),
    ),
    "counter without _total": ("names", replace_in_query("cache_hits_total{", "cache_hits{")),
    "histogram without _bucket": ("names", replace_in_query("request_seconds_bucket", "request_seconds")),
    "gauge with _total": ("names", replace_in_query("cache_models{", "cache_models_total{")),
    "counter read as a histogram": ("names", replace_in_query("model_loads_total", "model_loads_bucket")),
    "name without ray_": (
        "names",
        replace_in_query("ray_cortex_ray_async_queued", "cortex_ray_async_queued"),
    ),
    "name in a string": ("names", replace_in_query(QUEUED, '{__name__="cortex_ray_x"}')),
    "selector without a name": (
        "labels",
        replace_in_query(QUEUED, '{__name__="ray_cortex_ray_async_queued"}'),
    ),
    "by a label the metric lacks": (
        "labels",
        replace_in_query("by (api_name, model) (", "by (api_name, tier) ("),
    ),
    "by le on a counter": (
        "labels",
        replace_in_query("by (api_name, tier) (rate(", "by (api_name, le) (rate("),
    ),
    "postfix by a label the metric lacks": ("labels", replace_in_query(RETRIES, RETRIES_POSTFIX)),
    "matcher on a label the metric lacks": (
        "labels",
        replace_in_query('status=~"4..|5.."', 'code=~"4..|5.."'),
    ),
    "legend label the metric lacks": (
        "labels",
        set_on_panel(4, "targets", [{"refId": "A", "expr": REQUESTS_BY_API, "legendFormat": "{{tier}}"}]),
    ),
    "variable on a label the metric lacks": (
        "labels",
        set_variable("api_name", "query", "label_values(ray_cortex_ray_requests_total, app)"),
    ),
    "no api_name filter": ("filter", replace_in_query(QUEUED, "ray_cortex_ray_async_queued")),
    "another api_name filter": (
        "filter",
        replace_in_query(QUEUED, 'ray_cortex_ray_async_queued{api_name="x"}'),
    ),
    "fixed datasource": ("structure", set_on_panel(0, "datasource", {"type": "prometheus", "uid": "prom-1"})),
    "no datasource variable": ("structure", set_variable("datasource", "type", "custom")),
    "api_name single-select": ("structure", set_variable("api_name", "multi", False)),
    "duplicate id": ("ids", set_on_panel(1, "id", 2)),
    "overlapping panels": ("layout", set_on_panel(1, "gridPos", {"h": 4, "w": 6, "x": 3, "y": 1})),
    "metric on no panel": ("coverage", drop_panels_with("async_retried")),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_catches(dashboard: dict[str, Any], case: str) -> None:
    check, mutate = BROKEN[case]
    broken = copy.deepcopy(dashboard)
    mutate(broken)
    assert CHECKS[check](broken), f"{check} does not notice: {case}"
