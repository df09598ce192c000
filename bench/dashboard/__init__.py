"""The picture (docs/operations.md) of haproxy-sync's Grafana dashboard, drawn from a real sandbox run.

Why this exists: Grafana and Prometheus cannot be installed where this project is built, yet the
README should show what the dashboard (``ansible/roles/monitoring/files/dashboards/haproxy-sync.json``)
looks like on real data. So ``python -m bench.dashboard`` runs the real sandbox under churn and load,
scrapes both real ``/metrics`` endpoints every second the way Prometheus would, evaluates each panel's
own PromQL over those scrapes with a small evaluator (only what the dashboard's queries use), and
draws the panels in the dashboard's grid with matplotlib. The caption of the picture says exactly that.

Modules: ``sandbox`` (the ``haproxy-sync dev`` process and Consul calls), ``scrape`` (Prometheus
text parsing and the 1 s scraper), ``promql`` (parser and evaluator), ``load`` (HTTP load through
HAProxy), ``churn`` (the timeline of Consul changes), ``draw`` (the picture), ``__main__`` (the run).
"""
