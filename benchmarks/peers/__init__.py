"""Peer gateways the benchmarks run side by side with llm-proxy, each in its own venv."""
