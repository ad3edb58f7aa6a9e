"""Masking of personal data and secrets in logged content (`logging.content: redacted`)."""

from __future__ import annotations

import re

# Things shaped like API keys or bearer tokens: OpenAI/Anthropic/virtual keys (sk-...),
# AWS access keys, GitHub and Slack tokens, Google API keys, JWTs.
_API_KEY = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bxox[abpors]-[A-Za-z0-9\-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{16,}"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes.
_CARD = re.compile(r"(?<![\d])\d(?:[ \-]?\d){12,18}(?![\d])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# International (+CC ...) or grouped national numbers: 7-15 digits with separators.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}(?![\w])"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    s = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in s)
    return int(number) % 97 == 1


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ \-]", "", m.group(0))
    return "[CARD]" if luhn_ok(digits) else m.group(0)


def _iban(m: re.Match[str]) -> str:
    return "[IBAN]" if iban_ok(m.group(0)) else m.group(0)


def _phone(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:
        return text
    # A bare grouped number such as a date or a version is not a phone number; ask for a
    # leading "+" or a bracketed area code, or at least 9 digits.
    if text.startswith("+") or "(" in text or digits >= 9:
        return "[PHONE]"
    return text


def redact(text: str) -> str:
    """Mask API keys, card numbers (Luhn-valid), IBANs, e-mail addresses and phone numbers."""
    text = _API_KEY.sub("[API_KEY]", text)
    text = _CARD.sub(_card, text)
    text = _IBAN.sub(_iban, text)
    text = _EMAIL.sub("[EMAIL]", text)
    return _PHONE.sub(_phone, text)
