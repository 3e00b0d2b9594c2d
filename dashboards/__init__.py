"""Grafana dashboards as code: ``python -m dashboards.generate`` writes ``dashboards/json``.

See docs/dashboards.md.
"""
