"""llm-proxy's benchmarks: `python -m benchmarks.run` (`make bench`) from the repository root.

harness (processes, cores, /proc), load (bodies, wrk, statistics), scenarios/ (what is
measured), peers/ (other gateways run side by side), apps/ (programs the scenarios start),
figures, report and charts (what a run writes). See benchmarks/README.md.
"""
