"""Translations between the APIs clients speak and chat completions (pure, no I/O)."""
