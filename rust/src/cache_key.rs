//! Cache keys: the canonical form of the semantic part of a JSON request, hashed with xxh3-128.
//!
//! The canonical form is written in one pass over the body, without building a tree:
//! - object keys sorted by code point (a repeated key keeps its last value, as `json.loads` does),
//!   no insignificant whitespace;
//! - strings with escapes decoded and re-escaped the way `json.dumps(ensure_ascii=False)` does
//!   (only `"`, `\` and control characters); a lone surrogate escape stays a `\udxxx` escape;
//! - numbers compared by exact decimal value: `1`, `1.0`, `10e-1` and `-0` are spelt `1`, `1`,
//!   `1` and `0`. An integral value of at most [`PLAIN_DIGITS`] digits is spelt as an integer,
//!   a fraction with at most [`PLAIN_DIGITS`] decimals as `int.frac`, anything else as
//!   `<digits>e<exp>`. No precision is lost, so distinct big integers never collide;
//! - top-level fields that do not change the answer are left out: see [`is_ignored_field`].

use std::cmp::Ordering;
use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

/// Objects and arrays nested deeper than this are refused, so no input can exhaust the stack.
pub const MAX_DEPTH: usize = 128;
/// Longest integer (or count of decimals) spelt in plain digits rather than with an exponent.
pub const PLAIN_DIGITS: usize = 40;
/// Exponents are parsed into an `i64`; larger ones (past any real number) are refused.
const MAX_EXPONENT_DIGITS: usize = 15;

/// Why a body has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// The bytes are not JSON; `offset` is the byte where parsing stopped.
    Syntax { offset: usize, reason: &'static str },
    /// The body is JSON but not an object; `found` names what it is.
    NotAnObject { found: &'static str },
}

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { offset, reason } => write!(f, "invalid JSON at byte {offset}: {reason}"),
            Self::NotAnObject { found } => {
                write!(f, "request body must be a JSON object, got {found}")
            }
        }
    }
}

impl std::error::Error for CanonicalError {}

/// Top-level request fields that do not change the answer, so they are left out of the key.
pub fn is_ignored_field(key: &[u8]) -> bool {
    matches!(key, b"stream" | b"stream_options" | b"user" | b"metadata")
        || key.starts_with(b"x_llm_proxy")
}

/// The canonical bytes of a JSON object body (what [`cache_key`] hashes, minus the namespace).
pub fn canonical_json(body: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(body.len());
    write_canonical(body, &mut out)?;
    Ok(out)
}

/// xxh3-128 of the namespace (length-prefixed, so no two namespaces share a key) followed by the
/// canonical body.
pub fn cache_key(body: &[u8], namespace: &str) -> Result<u128, CanonicalError> {
    let mut out = Vec::with_capacity(body.len() + namespace.len() + 8);
    out.extend_from_slice(&(namespace.len() as u64).to_le_bytes());
    out.extend_from_slice(namespace.as_bytes());
    write_canonical(body, &mut out)?;
    Ok(xxh3_128(&out))
}

/// [`cache_key`] as 32 lowercase hex characters.
pub fn cache_key_hex(body: &[u8], namespace: &str) -> Result<String, CanonicalError> {
    cache_key(body, namespace).map(|key| format!("{key:032x}"))
}

/// Appends the canonical form of `body` to `out`.
pub fn write_canonical(body: &[u8], out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let mut w = Canonicalizer {
        src: body,
        pos: 0,
        out,
        members: Vec::new(),
    };
    w.skip_ws();
    let first = w.peek();
    w.value(0)?;
    w.skip_ws();
    if w.pos != body.len() {
        return Err(w.err("trailing characters after the JSON value"));
    }
    match first {
        Some(b'{') => Ok(()),
        Some(b'[') => Err(CanonicalError::NotAnObject { found: "an array" }),
        Some(b'"') => Err(CanonicalError::NotAnObject { found: "a string" }),
        Some(b't' | b'f') => Err(CanonicalError::NotAnObject { found: "a boolean" }),
        Some(b'n') => Err(CanonicalError::NotAnObject { found: "null" }),
        _ => Err(CanonicalError::NotAnObject { found: "a number" }),
    }
}

/// One written object member: `out[start..key_end]` is the quoted key, `out[start..end]` the
/// whole `"key":value`.
#[derive(Clone, Copy)]
struct Member {
    start: usize,
    key_end: usize,
    end: usize,
}

struct Canonicalizer<'a, 'o> {
    src: &'a [u8],
    pos: usize,
    out: &'o mut Vec<u8>,
    /// Members of the objects being written, innermost last (one shared stack, no per-object Vec).
    members: Vec<Member>,
}

impl<'a> Canonicalizer<'a, '_> {
    fn err(&self, reason: &'static str) -> CanonicalError {
        CanonicalError::Syntax {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), CanonicalError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected value")),
            None => Err(self.err("unexpected end of input, expected value")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), CanonicalError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.err("expected value"))
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 128 levels"));
        }
        self.pos += 1;
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.out.push(b',');
                }
                Some(b']') => {
                    self.pos += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']' in array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 128 levels"));
        }
        let top = depth == 1;
        self.pos += 1;
        self.out.push(b'{');
        let body_start = self.out.len();
        let base = self.members.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push(b'}');
            return Ok(());
        }
        let mut sorted = true;
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected object key (a string)"));
            }
            let comma_at = self.out.len();
            if self.members.len() > base {
                self.out.push(b',');
            }
            let start = self.out.len();
            self.string()?;
            let key_end = self.out.len();
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after object key"));
            }
            self.pos += 1;
            self.out.push(b':');
            self.skip_ws();
            self.value(depth)?;
            if top && is_ignored_field(&self.out[start + 1..key_end - 1]) {
                self.out.truncate(comma_at);
            } else {
                let member = Member {
                    start,
                    key_end,
                    end: self.out.len(),
                };
                if let Some(prev) = self.members[base..].last() {
                    sorted &= self.key_cmp(prev, &member) == Ordering::Less;
                }
                self.members.push(member);
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}' in object")),
            }
        }
        if !sorted {
            self.sort_members(base, body_start);
        }
        self.members.truncate(base);
        self.out.push(b'}');
        Ok(())
    }

    fn key_cmp(&self, a: &Member, b: &Member) -> Ordering {
        compare_keys(
            &self.out[a.start + 1..a.key_end - 1],
            &self.out[b.start + 1..b.key_end - 1],
        )
    }

    /// Rewrites `out[body_start..]` with the members in key order, keeping the last of equal keys.
    fn sort_members(&mut self, base: usize, body_start: usize) {
        let written = self.out[body_start..].to_vec();
        let mut order: Vec<Member> = self.members[base..]
            .iter()
            .map(|m| Member {
                start: m.start - body_start,
                key_end: m.key_end - body_start,
                end: m.end - body_start,
            })
            .collect();
        let key = |m: &Member| &written[m.start + 1..m.key_end - 1];
        order.sort_by(|a, b| compare_keys(key(a), key(b)));
        self.out.truncate(body_start);
        let mut first = true;
        for (i, m) in order.iter().enumerate() {
            if let Some(next) = order.get(i + 1) {
                if compare_keys(key(m), key(next)) == Ordering::Equal {
                    continue;
                }
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.out.extend_from_slice(&written[m.start..m.end]);
        }
    }

    fn string(&mut self) -> Result<(), CanonicalError> {
        self.pos += 1;
        self.out.push(b'"');
        loop {
            let run_start = self.pos;
            let mut high = 0u8;
            while let Some(&b) = self.src.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                high |= b;
                self.pos += 1;
            }
            let run = &self.src[run_start..self.pos];
            if high >= 0x80 {
                if let Err(e) = std::str::from_utf8(run) {
                    self.pos = run_start + e.valid_up_to();
                    return Err(self.err("invalid UTF-8 in string"));
                }
            }
            self.out.extend_from_slice(run);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    self.out.push(b'"');
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.err("control character in string")),
                None => return Err(self.err("unexpected end of input in string")),
            }
        }
    }

    fn escape(&mut self) -> Result<(), CanonicalError> {
        let c = match self.src.get(self.pos + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => return self.unicode_escape(),
            Some(_) => {
                self.pos += 1;
                return Err(self.err("invalid escape in string"));
            }
            None => {
                self.pos += 1;
                return Err(self.err("unexpected end of input in string"));
            }
        };
        self.pos += 2;
        push_char(self.out, u32::from(c));
        Ok(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.src.get(at..at + 4)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16)?;
        }
        Some(v)
    }

    fn unicode_escape(&mut self) -> Result<(), CanonicalError> {
        let Some(cp) = self.hex4(self.pos + 2) else {
            self.pos += 2;
            return Err(self.err("invalid \\u escape (expected 4 hex digits)"));
        };
        self.pos += 6;
        if (0xD800..0xDC00).contains(&cp) && self.src[self.pos..].starts_with(b"\\u") {
            if let Some(low @ 0xDC00..=0xDFFF) = self.hex4(self.pos + 2) {
                self.pos += 6;
                push_char(self.out, 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00));
                return Ok(());
            }
        }
        push_char(self.out, cp);
        Ok(())
    }

    fn digits(&mut self) -> &'a [u8] {
        let src = self.src;
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        &src[start..self.pos]
    }

    fn number(&mut self) -> Result<(), CanonicalError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("invalid number: leading zero"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        let int_end = self.pos;
        let mut frac = (int_end, int_end);
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let start = self.pos;
            if self.digits().is_empty() {
                return Err(self.err("invalid number: expected digit after '.'"));
            }
            frac = (start, self.pos);
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let exp_start = self.pos;
            let exp_digits = self.digits();
            if exp_digits.is_empty() {
                return Err(self.err("invalid number: expected digit in exponent"));
            }
            let significant = trim_leading_zeros(exp_digits);
            if significant.len() > MAX_EXPONENT_DIGITS {
                self.pos = exp_start;
                return Err(self.err("number exponent out of range"));
            }
            exponent = significant
                .iter()
                .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
            if exp_negative {
                exponent = -exponent;
            }
        }
        let int_digits = &self.src[int_start..int_end];
        let frac_digits = &self.src[frac.0..frac.1];
        if frac_digits.is_empty() && exponent == 0 && int_digits.len() <= PLAIN_DIGITS {
            // The common case, an integer literal, is already canonical (bar `-0`).
            if int_digits != b"0" && negative {
                self.out.push(b'-');
            }
            self.out.extend_from_slice(int_digits);
            return Ok(());
        }
        write_decimal(self.out, negative, int_digits, frac_digits, exponent);
        Ok(())
    }
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[zeros..]
}

/// Writes the value `±int_digits.frac_digits × 10^exponent` in its canonical spelling.
fn write_decimal(
    out: &mut Vec<u8>,
    negative: bool,
    int_digits: &[u8],
    frac_digits: &[u8],
    exponent: i64,
) {
    // value = digits × 10^exp, digits without leading or trailing zeros.
    let mut digits: Vec<u8> = Vec::with_capacity(int_digits.len() + frac_digits.len());
    digits.extend_from_slice(int_digits);
    digits.extend_from_slice(frac_digits);
    let mut exp = exponent - frac_digits.len() as i64;
    let lead = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..lead);
    while digits.last() == Some(&b'0') {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        out.push(b'0');
        return;
    }
    if negative {
        out.push(b'-');
    }
    let n = digits.len() as i64;
    let plain = PLAIN_DIGITS as i64;
    if exp >= 0 && n + exp <= plain {
        out.extend_from_slice(&digits);
        out.resize(out.len() + exp as usize, b'0');
    } else if exp < 0 && -exp <= plain {
        let decimals = (-exp) as usize;
        if digits.len() > decimals {
            let split = digits.len() - decimals;
            out.extend_from_slice(&digits[..split]);
            out.push(b'.');
            out.extend_from_slice(&digits[split..]);
        } else {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + decimals - digits.len(), b'0');
            out.extend_from_slice(&digits);
        }
    } else {
        out.extend_from_slice(&digits);
        out.push(b'e');
        out.extend_from_slice(exp.to_string().as_bytes());
    }
}

/// Writes one decoded character as `json.dumps(ensure_ascii=False)` would (a lone surrogate,
/// which has no UTF-8 form, as a `\udxxx` escape).
fn push_char(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0x22 => out.extend_from_slice(b"\\\""),
        0x5c => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0x0a => out.extend_from_slice(b"\\n"),
        0x0d => out.extend_from_slice(b"\\r"),
        0x09 => out.extend_from_slice(b"\\t"),
        0..=0x1f | 0xD800..=0xDFFF => {
            out.extend_from_slice(format!("\\u{cp:04x}").as_bytes());
        }
        _ => {
            let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Orders two canonical (escaped) keys by the code points they stand for.
fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    if !a.contains(&b'\\') && !b.contains(&b'\\') {
        // UTF-8 byte order is code point order.
        return a.cmp(b);
    }
    decode_key(a).cmp(&decode_key(b))
}

/// Code points of a canonical key; lone surrogates sort as themselves, as in Python.
fn decode_key(key: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(key);
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c as u32);
            continue;
        }
        let cp = match chars.next() {
            Some('b') => 0x08,
            Some('f') => 0x0c,
            Some('n') => 0x0a,
            Some('r') => 0x0d,
            Some('t') => 0x09,
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                u32::from_str_radix(&hex, 16).unwrap_or(0)
            }
            Some(other) => other as u32,
            None => 0x5c,
        };
        out.push(cp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> String {
        String::from_utf8(canonical_json(body.as_bytes()).unwrap()).unwrap()
    }

    fn key(body: &str) -> String {
        cache_key_hex(body.as_bytes(), "").unwrap()
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canon(r#" { "b" : [1, 2] , "a" : {"y":1,"x":2} } "#),
            r#"{"a":{"x":2,"y":1},"b":[1,2]}"#
        );
    }

    #[test]
    fn numbers_are_compared_by_value() {
        assert_eq!(
            canon(r#"{"a":[1,1.0,1e0,10e-1,0.1e1,-0,0.0,-0e5]}"#),
            r#"{"a":[1,1,1,1,1,0,0,0]}"#
        );
        assert_eq!(
            canon(r#"{"a":[0.5,-12.50,1.5e1,25e-3,1E+2]}"#),
            r#"{"a":[0.5,-12.5,15,0.025,100]}"#
        );
        assert_eq!(
            canon(r#"{"a":[1e100,1e-100,123456789e-50]}"#),
            r#"{"a":[1e100,1e-100,123456789e-50]}"#
        );
    }

    #[test]
    fn big_integers_keep_every_digit() {
        assert_eq!(
            canon(r#"{"a":18446744073709551617}"#),
            r#"{"a":18446744073709551617}"#
        );
        assert_ne!(
            key(r#"{"a":9007199254740993}"#),
            key(r#"{"a":9007199254740992}"#)
        );
        let long = format!(r#"{{"a":{}1}}"#, "9".repeat(60));
        assert_eq!(canon(&long), format!(r#"{{"a":{}1e0}}"#, "9".repeat(60)));
        assert_eq!(
            canon(&format!(r#"{{"a":1{}}}"#, "0".repeat(60))),
            r#"{"a":1e60}"#
        );
        assert_eq!(
            key(&format!(r#"{{"a":1{}}}"#, "0".repeat(60))),
            key(r#"{"a":1e60}"#)
        );
    }

    #[test]
    fn string_escapes_are_decoded() {
        assert_eq!(
            canon(r#"{"a":"\u0041\/\u00e9\ud83d\ude00"}"#),
            "{\"a\":\"A/é😀\"}"
        );
        assert_eq!(
            canon(r#"{"a":"\u001f\n\"\\\u007f"}"#),
            "{\"a\":\"\\u001f\\n\\\"\\\\\u{7f}\"}"
        );
        assert_eq!(canon(r#"{"a":"\ud800x"}"#), r#"{"a":"\ud800x"}"#);
    }

    #[test]
    fn escaped_keys_sort_by_code_point() {
        // "\n" (0x0a) sorts before "!" (0x21) although its escape starts with '\'.
        assert_eq!(canon(r#"{"a!":1,"a\n":2}"#), r#"{"a\n":2,"a!":1}"#);
    }

    #[test]
    fn repeated_key_keeps_last_value() {
        assert_eq!(canon(r#"{"b":1,"a":1,"b":2}"#), r#"{"a":1,"b":2}"#);
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }

    #[test]
    fn ignored_top_level_fields_are_left_out() {
        let body = r#"{"stream":true,"model":"m","user":"u","metadata":{},"stream_options":{"include_usage":true},"x_llm_proxy_ttl":5,"messages":[]}"#;
        assert_eq!(canon(body), r#"{"messages":[],"model":"m"}"#);
        assert_eq!(
            canon(r#"{"a":{"stream":true}}"#),
            r#"{"a":{"stream":true}}"#
        );
        assert_eq!(canon(r#"{"stream":1}"#), "{}");
    }

    #[test]
    fn namespace_is_length_prefixed() {
        let body = br#"{"a":1}"#;
        assert_ne!(cache_key(body, "a").unwrap(), cache_key(body, "").unwrap());
        assert_ne!(
            cache_key(br#"{"c":1}"#, "ab").unwrap(),
            cache_key(br#"{"c":1}"#, "a").unwrap()
        );
        assert_eq!(key(r#"{"a":1}"#).len(), 32);
    }

    #[test]
    fn errors_name_the_byte_offset() {
        let err = |s: &str| canonical_json(s.as_bytes()).unwrap_err().to_string();
        assert_eq!(err(r#"{"a": }"#), "invalid JSON at byte 6: expected value");
        assert_eq!(
            err(""),
            "invalid JSON at byte 0: unexpected end of input, expected value"
        );
        assert_eq!(
            err(r#"{"a":1} x"#),
            "invalid JSON at byte 8: trailing characters after the JSON value"
        );
        assert_eq!(
            err(r#"{"a":01}"#),
            "invalid JSON at byte 6: invalid number: leading zero"
        );
        assert_eq!(
            err("[1]"),
            "request body must be a JSON object, got an array"
        );
        assert_eq!(err("1"), "request body must be a JSON object, got a number");
        assert_eq!(
            err("{\"a\":\"\u{1}\"}"),
            "invalid JSON at byte 6: control character in string"
        );
        assert!(err(r#"{"a":1e9999999999999999999}"#).contains("exponent out of range"));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = canonical_json(b"{\"a\":\"x\xff\"}").unwrap_err();
        assert_eq!(
            err,
            CanonicalError::Syntax {
                offset: 7,
                reason: "invalid UTF-8 in string"
            }
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(canonical_json(deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("nesting"));
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(canonical_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn semantic_changes_change_the_key() {
        let base =
            key(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        for other in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.50001}"#,
            r#"{"model":"n","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        ] {
            assert_ne!(key(other), base, "{other}");
        }
        assert_ne!(key(r#"{"a":[1,2]}"#), key(r#"{"a":[2,1]}"#));
        assert_ne!(key(r#"{"a":"1"}"#), key(r#"{"a":1}"#));
    }
}
