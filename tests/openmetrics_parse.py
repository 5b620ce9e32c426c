#!/usr/bin/env python3
"""Parse OpenMetrics text from stdin with prometheus_client's strict parser (an independent
reader of `trayback status --format openmetrics`); print each sample as one JSON line:
{"name": ..., "labels": {...}, "value": ...}. Exits non-zero on any format error."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                          "labels": s.labels, "value": s.value}))
