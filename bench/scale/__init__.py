"""Scale benchmark (issue #8): what haproxy-sync and consul-template cost as the catalog grows.

devconsul holds N services x 10 instances (N = 100, 300, 1,000, 3,000 by default), every one tagged
for discovery; for each size both tools run against their own fresh devconsul with the same catalog.
Per size and tool: cold start to the first applied config, render (+ ``haproxy -c``), RSS and CPU
while idle, and what a burst of 10,000 instance changes within 1 s costs (applies, HAProxy reloads).
See ``python -m bench.scale --help`` and docs/benchmarks.md, "Scale". Not a test: nothing asserts.
"""
