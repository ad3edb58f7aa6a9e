//! Masking of personal data and secrets in logged content (`logging.content: redacted`): a port
//! of `observe/redact.py`, giving the same output for the same input (held to it by a property
//! test against the Python reference). Differences are confined to non-ASCII digits in IBANs
//! and to characters Python and Unicode class differently as word or space characters.

use std::borrow::Cow;
use std::sync::LazyLock;

use fancy_regex::Regex as FancyRegex;
use regex::{Captures, Regex};

// Things shaped like API keys or bearer tokens: OpenAI/Anthropic/virtual keys (sk-...), AWS
// access keys, GitHub and Slack tokens, Google API keys, JWTs.
static API_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}",
        r"|\bAKIA[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}",
        r"|\bxox[abpors]-[A-Za-z0-9\-]{10,}",
        r"|\bAIza[0-9A-Za-z_\-]{35}",
        r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        r"|(?i:bearer)\s+[A-Za-z0-9._\-]{16,}",
    ))
    .expect("API key pattern")
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
        .expect("e-mail pattern")
});
// 13-19 digits, optionally grouped by spaces or dashes (lookarounds: fancy-regex).
static CARD: LazyLock<FancyRegex> = LazyLock::new(|| {
    FancyRegex::new(r"(?<![\d])\d(?:[ \-]?\d){12,18}(?![\d])").expect("card pattern")
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("IBAN pattern"));
// International (+CC ...) or grouped national numbers: 7-15 digits with separators.
static PHONE: LazyLock<FancyRegex> = LazyLock::new(|| {
    FancyRegex::new(
        r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}(?![\w])",
    )
    .expect("phone pattern")
});

// What every match of CARD and PHONE contains, found by the fast engine: text without it
// (most prose) skips the backtracking one, whose leading lookbehind makes it test every
// position (~40 ns a character).
static CARD_HINT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d(?:[ \-]?\d){12}").expect("card hint"));
static PHONE_HINT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d\d[ .\-]\d\d").expect("phone hint"));

/// Python's `luhn_ok`, digit values taken as `ord(ch) - 48` as it does.
pub fn luhn_ok(digits: &str) -> bool {
    let mut total: i64 = 0;
    for (i, ch) in digits.chars().rev().enumerate() {
        let mut d = ch as i64 - 48;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        total += d;
    }
    total.rem_euclid(10) == 0
}

/// Python's `iban_ok`: 15-34 characters and the ISO 13616 mod-97 check.
pub fn iban_ok(text: &str) -> bool {
    let s: Vec<char> = text.chars().filter(|&c| c != ' ').collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &ch in s[4..].iter().chain(&s[..4]) {
        let Some(v) = ch.to_digit(36) else {
            return false;
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn fancy_replace<'t>(
    re: &FancyRegex,
    text: &'t str,
    mut replace: impl FnMut(&str) -> Option<&'static str>,
) -> Cow<'t, str> {
    let mut out: Option<String> = None;
    let mut last = 0;
    for found in re.find_iter(text) {
        // A pattern that cannot match (backtrack limit) leaves the text as it is.
        let Ok(m) = found else { break };
        if let Some(mask) = replace(m.as_str()) {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[last..m.start()]);
            buf.push_str(mask);
            last = m.end();
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[last..]);
            Cow::Owned(buf)
        }
    }
}

fn card(m: &str) -> Option<&'static str> {
    let digits: String = m.chars().filter(|&c| c != ' ' && c != '-').collect();
    luhn_ok(&digits).then_some("[CARD]")
}

fn phone(m: &str) -> Option<&'static str> {
    let digits = m.chars().filter(|c| !" .-+()".contains(*c)).count();
    if !(7..=15).contains(&digits) {
        return None;
    }
    // A bare grouped number such as a date or a version is not a phone number; ask for a
    // leading "+" or a bracketed area code, or at least 9 digits.
    (m.starts_with('+') || m.contains('(') || digits >= 9).then_some("[PHONE]")
}

/// Mask API keys, card numbers (Luhn-valid), IBANs, e-mail addresses and phone numbers.
pub fn redact(text: &str) -> String {
    let text = API_KEY.replace_all(text, "[API_KEY]");
    let text = if CARD_HINT.is_match(&text) {
        fancy_replace(&CARD, &text, card)
    } else {
        text
    };
    let text = IBAN.replace_all(&text, |c: &Captures<'_>| {
        if iban_ok(&c[0]) {
            "[IBAN]".to_owned()
        } else {
            c[0].to_owned()
        }
    });
    let text = EMAIL.replace_all(&text, "[EMAIL]");
    if PHONE_HINT.is_match(&text) {
        fancy_replace(&PHONE, &text, phone).into_owned()
    } else {
        text.into_owned()
    }
}

/// Removes known secrets (provider keys, the caller's own key) from any stored text.
#[derive(Debug, Clone, Default)]
pub struct SecretMask {
    pattern: Option<Regex>,
}

impl SecretMask {
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut found: Vec<&str> = secrets
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| s.chars().count() >= 4)
            .collect();
        found.sort_unstable();
        found.dedup();
        found.sort_by_key(|s| std::cmp::Reverse(s.chars().count()));
        let pattern = (!found.is_empty()).then(|| {
            let alternatives: Vec<String> = found.iter().map(|s| regex::escape(s)).collect();
            Regex::new(&alternatives.join("|")).expect("escaped literals")
        });
        Self { pattern }
    }

    /// `text` with every secret, and `extra` (the caller's key) if given, as `[SECRET]`.
    pub fn apply(&self, text: &str, extra: Option<&str>) -> String {
        let mut text = match &self.pattern {
            Some(p) => p.replace_all(text, "[SECRET]").into_owned(),
            None => text.to_owned(),
        };
        if let Some(extra) = extra {
            if extra.chars().count() >= 4 && text.contains(extra) {
                text = text.replace(extra, "[SECRET]");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_each_kind() {
        let text = "key sk-abcdefghijklmnopqrstu card 4111 1111 1111 1111 mail a.b@example.com \
                    iban GB82 WEST 1234 5698 7654 32 phone +44 20 7946 0958";
        let out = redact(text);
        assert_eq!(
            out,
            "key [API_KEY] card [CARD] mail [EMAIL] iban [IBAN] phone [PHONE]"
        );
    }

    #[test]
    fn leaves_lookalikes() {
        assert_eq!(redact("4111 1111 1111 1112"), "4111 1111 1111 1112");
        assert_eq!(redact("on 2024-01-05"), "on 2024-01-05");
        assert_eq!(redact("version 1.2.3"), "version 1.2.3");
    }

    #[test]
    fn secret_mask_prefers_the_longest_and_masks_the_caller() {
        let mask = SecretMask::new(&["abcd", "abcdef", "xy"]);
        assert_eq!(mask.apply("abcdefg abcd xy", None), "[SECRET]g [SECRET] xy");
        assert_eq!(mask.apply("my key1234", Some("key1234")), "my [SECRET]");
        assert_eq!(mask.apply("k12", Some("k12")), "k12");
    }
}
