"""What the benchmarks share: free ports and the one reader of haproxy-sync's /metrics.

A benchmark keeps its scenario and its report; the helpers every one of them needs live here once.
"""
