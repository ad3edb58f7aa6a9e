"""llm-proxy: a fast drop-in gateway between applications and LLM providers."""

__version__ = "0.1.0"
