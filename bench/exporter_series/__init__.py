"""Exporter-series benchmark: how many Prometheus series HAProxy's built-in exporter serves per edge.

haproxy-sync pre-creates free server slots (about as many as a backend has instances) and keeps them
in maintenance (``disabled``); HAProxy's exporter reports every server, in maintenance or not, unless
the scrape asks ``/metrics?no-maint``. Per-slot counts measured on a 3-instance backend gave only an
estimate of the per-edge figure; this benchmark measures it on a whole edge instead: N services x 10
instances rendered exactly as the product renders them (in-process, no Consul), run by a real
master-worker HAProxy, scraped with and without ``no-maint``, on each HAProxy binary given.

See ``python -m bench.exporter_series --help``. Not a test: nothing asserts.
"""
