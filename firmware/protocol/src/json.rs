//! A strict JSON reader (RFC 8259) that needs no allocator.
//!
//! [`parse`] validates a whole document once — grammar, string escapes, duplicate keys,
//! nothing after the value — and returns a [`Value`] that borrows the text. Reading an
//! object's fields afterwards walks the validated text again without copying it.
//! Nesting is bounded by the caller's depth scan ([`exceeds_depth`]) and again here, so
//! no input makes the parser recurse deeply.

use crate::Reject;

/// True when brackets outside strings nest deeper than `max` levels.
///
/// This is the scan PROTOCOL.md asks for before any parsing: it only counts `[`/`{`
/// against `]`/`}` and skips string contents, so it is linear and cannot recurse.
pub fn exceeds_depth(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses and validates one whole JSON document.
///
/// Errors: [`Reject::NotJson`] for anything RFC 8259 does not allow (including `NaN`,
/// lone surrogates, control characters in strings and trailing text),
/// [`Reject::DuplicateKey`] when an object repeats a key, [`Reject::TooDeep`] past
/// [`crate::MAX_DEPTH`] levels.
pub fn parse(text: &str) -> Result<Value<'_>, Reject> {
    let mut cursor = Cursor::new(text);
    let value = cursor.value(Mode::Validate(crate::MAX_DEPTH))?;
    cursor.skip_whitespace();
    if cursor.pos == text.len() {
        Ok(value)
    } else {
        Err(Reject::NotJson)
    }
}

/// Keys of one object compared as they are read; beyond this many, afterwards.
const KEYS_AT_ONCE: usize = 24;

/// A JSON value borrowed from validated text.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, kept as its text until a field asks for a type.
    Number(Number<'a>),
    /// A string, kept with its escapes.
    String(Str<'a>),
    /// An array.
    Array(Array<'a>),
    /// An object.
    Object(Object<'a>),
}

/// The text of a JSON number.
#[derive(Debug, Clone, Copy)]
pub struct Number<'a>(&'a str);

impl Number<'_> {
    /// The number as an unsigned integer: only an integer literal qualifies
    /// ([`Reject::WrongType`] otherwise); negative or too large is [`Reject::OutOfRange`].
    pub fn to_u64(self) -> Result<u64, Reject> {
        let text = self.0;
        if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            return Err(Reject::WrongType);
        }
        if let Some(magnitude) = text.strip_prefix('-') {
            return if magnitude.bytes().all(|b| b == b'0') {
                Ok(0)
            } else {
                Err(Reject::OutOfRange)
            };
        }
        text.bytes().try_fold(0u64, |acc, digit| {
            acc.checked_mul(10)
                .and_then(|acc| acc.checked_add(u64::from(digit - b'0')))
                .ok_or(Reject::OutOfRange)
        })
    }

    /// The number as a finite float; one that overflows is [`Reject::OutOfRange`].
    pub fn to_f64(self) -> Result<f64, Reject> {
        match self.0.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(Reject::OutOfRange),
        }
    }
}

/// A JSON string as it appears between its quotes, escapes not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    /// The raw text between the quotes.
    text: &'a str,
    /// Whether it holds an escape (found while scanning, so comparisons need not look).
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded characters.
    pub fn chars(self) -> impl Iterator<Item = char> + 'a {
        Unescape {
            rest: self.text.chars(),
        }
    }

    /// True when the decoded string equals `other`.
    pub fn eq_str(self, other: &str) -> bool {
        if self.escaped {
            self.chars().eq(other.chars())
        } else {
            self.text == other
        }
    }

    fn same_as(self, other: Str<'_>) -> bool {
        if self.escaped || other.escaped {
            self.chars().eq(other.chars())
        } else {
            self.text == other.text
        }
    }

    /// The text itself when it has no escapes (the common case; identifiers never do).
    pub fn as_plain(self) -> Option<&'a str> {
        (!self.escaped).then_some(self.text)
    }

    /// The number of decoded characters.
    pub fn char_count(self) -> usize {
        self.chars().count()
    }

    /// Decodes into `out`, failing with [`Reject::OutOfRange`] when it does not fit.
    pub fn decode_into<const N: usize>(self, out: &mut heapless::String<N>) -> Result<(), Reject> {
        out.clear();
        if let Some(plain) = self.as_plain() {
            return out.push_str(plain).map_err(|_| Reject::OutOfRange);
        }
        self.chars()
            .try_for_each(|c| out.push(c))
            .map_err(|_| Reject::OutOfRange)
    }
}

/// Decodes the escapes of validated string text.
struct Unescape<'a> {
    rest: core::str::Chars<'a>,
}

impl Unescape<'_> {
    fn hex4(&mut self) -> Option<u32> {
        (0..4).try_fold(0u32, |acc, _| {
            Some(acc * 16 + self.rest.next()?.to_digit(16)?)
        })
    }
}

impl Iterator for Unescape<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c != '\\' {
            return Some(c);
        }
        let decoded = match self.rest.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let high = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    self.rest.next();
                    self.rest.next();
                    let low = self.hex4()?;
                    0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    high
                };
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            other => other,
        };
        Some(decoded)
    }
}

/// A validated JSON array.
#[derive(Debug, Clone, Copy)]
pub struct Array<'a>(&'a str);

impl<'a> Array<'a> {
    /// The elements, in order.
    pub fn iter(self) -> Elements<'a> {
        Elements {
            cursor: Cursor::after_open(self.0),
            done: false,
        }
    }
}

/// Iterator over the elements of an [`Array`].
#[derive(Clone)]
pub struct Elements<'a> {
    cursor: Cursor<'a>,
    done: bool,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.done {
            return None;
        }
        match self.cursor.next_member(b']', false) {
            Some((_, value)) => Some(value),
            None => {
                self.done = true;
                None
            }
        }
    }
}

/// A validated JSON object.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a>(&'a str);

impl<'a> Object<'a> {
    /// The key/value pairs, in document order.
    pub fn entries(self) -> Entries<'a> {
        Entries {
            cursor: Cursor::after_open(self.0),
            done: false,
        }
    }

    /// The value of `key`, if present.
    pub fn get(self, key: &str) -> Option<Value<'a>> {
        self.entries().find(|(k, _)| k.eq_str(key)).map(|(_, v)| v)
    }

    fn has_duplicate_keys(self) -> bool {
        let mut outer = self.entries();
        while let Some((key, _)) = outer.next() {
            if outer.clone().any(|(other, _)| key.same_as(other)) {
                return true;
            }
        }
        false
    }
}

/// An object's entries read once, for many lookups by key (a message's top level).
#[derive(Debug, Clone)]
pub struct Table<'a> {
    object: Object<'a>,
    entries: heapless::Vec<(Str<'a>, Value<'a>), KEYS_AT_ONCE>,
    complete: bool,
}

impl<'a> Table<'a> {
    /// Reads the entries of `object`.
    pub fn new(object: Object<'a>) -> Self {
        let mut entries = heapless::Vec::new();
        let complete = object.entries().all(|entry| entries.push(entry).is_ok());
        Table {
            object,
            entries,
            complete,
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        if self.complete {
            self.entries
                .iter()
                .find(|(k, _)| k.eq_str(key))
                .map(|(_, v)| *v)
        } else {
            self.object.get(key)
        }
    }
}

/// Iterator over the entries of an [`Object`].
#[derive(Clone)]
pub struct Entries<'a> {
    cursor: Cursor<'a>,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Str<'a>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.cursor.next_member(b'}', true) {
            Some((Some(key), value)) => Some((key, value)),
            _ => {
                self.done = true;
                None
            }
        }
    }
}

/// How a cursor treats nested containers.
#[derive(Clone, Copy)]
enum Mode {
    /// Check everything; the number is the depth still allowed.
    Validate(usize),
    /// The text is known to be valid: jump over containers.
    Skim,
}

#[derive(Clone)]
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0 }
    }

    /// A cursor just inside the opening bracket of validated container text.
    fn after_open(container: &'a str) -> Self {
        Cursor {
            text: container,
            pos: 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Reject> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Reject::NotJson)
        }
    }

    /// Reads the next member of a skimmed (already valid) container: the key for
    /// objects, then the value. `None` at the closing bracket.
    fn next_member(&mut self, close: u8, keyed: bool) -> Option<(Option<Str<'a>>, Value<'a>)> {
        self.skip_whitespace();
        if self.peek() == Some(b',') {
            self.pos += 1;
            self.skip_whitespace();
        }
        if self.peek() == Some(close) || self.peek().is_none() {
            return None;
        }
        let key = if keyed {
            let key = self.string().ok()?;
            self.expect(b':').ok()?;
            Some(key)
        } else {
            None
        };
        let value = self.value(Mode::Skim).ok()?;
        Some((key, value))
    }

    fn value(&mut self, mode: Mode) -> Result<Value<'a>, Reject> {
        self.skip_whitespace();
        match self.peek().ok_or(Reject::NotJson)? {
            b'{' => self
                .container(mode, b'}')
                .map(|text| Value::Object(Object(text))),
            b'[' => self
                .container(mode, b']')
                .map(|text| Value::Array(Array(text))),
            b'"' => self.string().map(Value::String),
            b't' => self.literal("true").map(|()| Value::Bool(true)),
            b'f' => self.literal("false").map(|()| Value::Bool(false)),
            b'n' => self.literal("null").map(|()| Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            _ => Err(Reject::NotJson),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), Reject> {
        let rest = self.text.as_bytes().get(self.pos..).unwrap_or_default();
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Reject::NotJson)
        }
    }

    /// Reads a container starting at its opening bracket and returns its text.
    fn container(&mut self, mode: Mode, close: u8) -> Result<&'a str, Reject> {
        let start = self.pos;
        let keys_checked = match mode {
            Mode::Skim => {
                self.skip_container()?;
                true
            }
            Mode::Validate(0) => return Err(Reject::TooDeep),
            Mode::Validate(depth) => self.validate_members(Mode::Validate(depth - 1), close)?,
        };
        let text = &self.text[start..self.pos];
        if close == b'}' && !keys_checked && Object(text).has_duplicate_keys() {
            return Err(Reject::DuplicateKey);
        }
        Ok(text)
    }

    /// Validates the members of a container; for an object, also that no key repeats
    /// (checked as keys are read, for up to [`KEYS_AT_ONCE`] keys; a larger object is
    /// checked afterwards by [`Object::has_duplicate_keys`]).
    fn validate_members(&mut self, inner: Mode, close: u8) -> Result<bool, Reject> {
        let mut keys: heapless::Vec<Str<'a>, KEYS_AT_ONCE> = heapless::Vec::new();
        let mut checked = true;
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(checked);
        }
        loop {
            if close == b'}' {
                self.skip_whitespace();
                if self.peek() != Some(b'"') {
                    return Err(Reject::NotJson);
                }
                let key = self.string()?;
                if checked {
                    if keys.iter().any(|k| k.same_as(key)) {
                        return Err(Reject::DuplicateKey);
                    }
                    checked = keys.push(key).is_ok();
                }
                self.expect(b':')?;
            }
            self.value(inner)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(checked);
                }
                _ => return Err(Reject::NotJson),
            }
        }
    }

    /// Jumps to just after the bracket that closes the one at the cursor.
    fn skip_container(&mut self) -> Result<(), Reject> {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(Reject::NotJson)
    }

    /// Reads a string starting at its opening quote.
    fn string(&mut self) -> Result<Str<'a>, Reject> {
        if self.peek() != Some(b'"') {
            return Err(Reject::NotJson);
        }
        self.pos += 1;
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            let b = *bytes.get(self.pos).ok_or(Reject::NotJson)?;
            self.pos += 1;
            match b {
                b'"' => {
                    return Ok(Str {
                        text: &self.text[start..self.pos - 1],
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0x00..=0x1f => return Err(Reject::NotJson),
                _ => {}
            }
        }
    }

    /// Checks one escape after its backslash, including surrogate pairs.
    fn escape(&mut self) -> Result<(), Reject> {
        let b = self.peek().ok_or(Reject::NotJson)?;
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.hex4()? {
                0xD800..=0xDBFF => {
                    self.literal("\\u")?;
                    match self.hex4()? {
                        0xDC00..=0xDFFF => Ok(()),
                        _ => Err(Reject::NotJson),
                    }
                }
                0xDC00..=0xDFFF => Err(Reject::NotJson),
                _ => Ok(()),
            },
            _ => Err(Reject::NotJson),
        }
    }

    fn hex4(&mut self) -> Result<u32, Reject> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or(Reject::NotJson)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Reject::NotJson);
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Reject::NotJson)
    }

    /// Reads a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<Number<'a>, Reject> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Reject::NotJson),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        Ok(Number(&self.text[start..self.pos]))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Reject> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(Reject::NotJson)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    fn verdict(text: &str) -> Result<(), Reject> {
        parse(text).map(|_| ())
    }

    #[test]
    fn accepts_rfc_8259_values() {
        for text in [
            "{}",
            "[]",
            " {\"a\" : [1, -0, 0.5, 1e3, -2.5E-3, true, false, null, \"x\"]} ",
            "\"\\u00e6\\ud83d\\ude00\\n\"",
            "0",
        ] {
            assert_eq!(verdict(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn refuses_what_rfc_8259_does_not_allow() {
        for text in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "{\"a\" 1}",
            "{a:1}",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"tab\there\"",
            "{} {}",
            "tru",
            "'a'",
        ] {
            assert_eq!(verdict(text), Err(Reject::NotJson), "{text:?}");
        }
    }

    #[test]
    fn duplicate_keys_at_any_level_and_after_escapes() {
        assert_eq!(verdict("{\"a\":1,\"a\":2}"), Err(Reject::DuplicateKey));
        assert_eq!(
            verdict("{\"x\":[{\"b\":1,\"b\":1}]}"),
            Err(Reject::DuplicateKey)
        );
        assert_eq!(
            verdict("{\"a\":1,\"\\u0061\":2}"),
            Err(Reject::DuplicateKey)
        );
        assert_eq!(verdict("{\"a\":{\"a\":1}}"), Ok(()));
        // Past the keys compared while reading, the check afterwards still finds them.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let unique = format!("{{{}}}", many.join(","));
        assert_eq!(verdict(&unique), Ok(()));
        let repeated = format!("{{{},\"k3\":0}}", many.join(","));
        assert_eq!(verdict(&repeated), Err(Reject::DuplicateKey));
        let Ok(Value::Object(object)) = parse(&unique) else {
            panic!()
        };
        let table = Table::new(object);
        assert!(
            matches!(table.get("k39"), Some(Value::Number(_))),
            "found beyond the table"
        );
        assert!(table.get("k40").is_none());
    }

    #[test]
    fn keys_written_with_escapes_are_found_by_what_they_decode_to() {
        let text = "{\"\\u0076\":1,\"a\\/b\":\"x\\ty\",\"plain\":\"p\"}";
        let Ok(Value::Object(object)) = parse(text) else {
            panic!("not an object: {text}")
        };
        let table = Table::new(object);
        for (key, found) in [("v", true), ("a/b", true), ("\\u0076", false)] {
            assert_eq!(object.get(key).is_some(), found, "{key} in {text}");
            assert_eq!(
                table.get(key).is_some(),
                found,
                "{key} in the table of {text}"
            );
        }
        let Some(Value::String(escaped)) = table.get("a/b") else {
            panic!()
        };
        assert_eq!(escaped.as_plain(), None);
        assert!(escaped.eq_str("x\ty"));
        assert!(!escaped.eq_str("x\\ty"));
        let Some(Value::String(plain)) = table.get("plain") else {
            panic!()
        };
        assert_eq!(plain.as_plain(), Some("p"));
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        assert!(!exceeds_depth(b"{\"[[[[[[[[[[\":1}", 8));
        assert!(!exceeds_depth(b"{\"\\\"[[[[[[[[[[\":1}", 8));
        assert!(exceeds_depth(b"[[[[[[[[[", 8));
        assert!(!exceeds_depth(b"[[[[[[[[]]]]]]]]", 8));
    }

    #[test]
    fn parse_bounds_depth_on_its_own() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(verdict(&deep), Err(Reject::TooDeep));
    }

    #[test]
    fn numbers_convert_strictly() {
        let number = |t: &'static str| Number(t);
        assert_eq!(number("42").to_u64(), Ok(42));
        assert_eq!(number("-0").to_u64(), Ok(0));
        assert_eq!(number("5.0").to_u64(), Err(Reject::WrongType));
        assert_eq!(number("1e2").to_u64(), Err(Reject::WrongType));
        assert_eq!(number("-3").to_u64(), Err(Reject::OutOfRange));
        assert_eq!(
            number("18446744073709551616").to_u64(),
            Err(Reject::OutOfRange)
        );
        assert_eq!(number("1e400").to_f64(), Err(Reject::OutOfRange));
        assert_eq!(number("7.0e0").to_f64(), Ok(7.0));
    }

    #[test]
    fn reads_objects_and_arrays() {
        let Ok(Value::Object(obj)) = parse("{\"a\":[1,{\"b\":\"c\\\"\"}],\"d\":null}") else {
            panic!("not an object");
        };
        let Some(Value::Array(items)) = obj.get("a") else {
            panic!("no array");
        };
        assert_eq!(items.iter().count(), 2);
        let Some(Value::Object(inner)) = items.iter().nth(1) else {
            panic!("no inner object");
        };
        let Some(Value::String(s)) = inner.get("b") else {
            panic!("no string");
        };
        assert!(s.eq_str("c\""));
        assert!(matches!(obj.get("d"), Some(Value::Null)));
        assert!(obj.get("zz").is_none());
    }
}
