"""Scrapes a wal-archiver's /metrics over HTTP and prints what prometheus_client's
OpenMetrics parser makes of the page, as JSON: the content type, each family's
type, and every sample with its labels. A page the parser refuses fails here."""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    content_type = response.headers.get("Content-Type", "")
    page = response.read().decode("utf-8")

families = {}
samples = []
for family in text_string_to_metric_families(page):
    families[family.name] = family.type
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps({"content_type": content_type, "families": families, "samples": samples}))
