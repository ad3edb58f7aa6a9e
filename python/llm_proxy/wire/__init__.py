"""The wire formats, declared once: OpenAI's and Anthropic's JSON, and SSE framing.

Every door, provider, cache and log reads and writes requests and answers through these.
"""
