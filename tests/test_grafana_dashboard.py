"""The Grafana dashboard shipped in contrib/grafana: valid JSON in Grafana's
dashboard model, querying only metrics momd writes, in PromQL that
Prometheus' own promtool parses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from momservice.metrics import ALL_METRICS
from tests.helpers.promtool import PromtoolUnavailable, find_promtool
from tests.test_metrics import REQUIRED

DASHBOARD = Path(__file__).resolve().parents[1] / "contrib" / "grafana" / "mom-dashboard.json"
_METRIC = re.compile(r"\bmom_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))      # a collapsed row holds its panels
    return found


def queries(board: dict) -> list[str]:
    """Every PromQL text: the panels' targets and the variables' queries."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
            exprs.append(variable["query"]["query"])
    return exprs


def test_the_dashboard_is_a_grafana_dashboard():
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        # Every query goes to the data source the user picks.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_metric_queried_is_one_momd_writes():
    written = {m.name for m in ALL_METRICS}
    queried = {name for expr in queries(dashboard()) for name in _METRIC.findall(expr)}
    assert queried, "the dashboard queries no mom_* metric"
    assert queried <= written, sorted(queried - written)
    # The figures the issue names are all on it.
    assert set(REQUIRED) <= queried, sorted(set(REQUIRED) - queried)


def test_promtool_parses_every_query(tmp_path):
    """Each query, its variables given a value, as a recording rule: ``promtool
    check rules`` parses the PromQL (JSON is YAML, so the file is JSON)."""
    try:
        promtool = find_promtool()
    except PromtoolUnavailable as e:
        pytest.skip(f"promtool (Debian's prometheus package) cannot be fetched: {e}")
    exprs = [e.replace("$instance", ".*").replace("$guest", ".*")
             for e in queries(dashboard()) if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "mom-dashboard", "rules": [
        {"record": f"mom_dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))
    result = subprocess.run([str(promtool), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
    # And a broken query would have been caught.
    path.write_text(json.dumps({"groups": [{"name": "x", "rules": [
        {"record": "x:y", "expr": "rate(mom_guests[5m]"}]}]}))
    broken = subprocess.run([str(promtool), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0
