//! What a namespace name may be.
//!
//! A name is hashed into every lock id of its namespace, and it is the label
//! the namespace is known by: in the comment each lock statement starts with
//! (`/* pglock ns=billing:invoice */`, which `pg_stat_activity` shows), in
//! errors, events, metrics and `pglock locks`. So a name must show
//! something, and hold nothing that a comment or a log line would read
//! differently:
//!
//! - it is not empty, and not only whitespace;
//! - it holds no `*/` and no `/*`, which would end or open a comment;
//! - it holds no control characters (a line break, a tab, `\0`, ...), which
//!   hide in a log line or break it in two.
//!
//! Anything else goes: `billing:invoice`, `tenant migrate`, `ünïcödé:κλειδί`.
//! A raw namespace's label is not a name (the id does not depend on it) and
//! is not checked; the runtime shows every label in its markers through a
//! fixed set of safe characters anyway.
//!
//! [`check`] is a `const fn`, so that `Namespace::named` in a `static`
//! refuses a name at compile time, with the text the attribute gives and
//! `Namespace::try_named` returns: [`NameError::message`].

use std::fmt;

/// Why a namespace name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is only whitespace.
    Blank,
    /// The name holds `*/`.
    CommentEnd,
    /// The name holds `/*`.
    CommentStart,
    /// The name holds a control character.
    ControlCharacter,
}

impl NameError {
    /// What to tell the user: the one text of this refusal, wherever the name
    /// was written.
    pub const fn message(self) -> &'static str {
        match self {
            NameError::Empty => {
                "a namespace name can't be empty: name the lock family, such as \"billing:invoice\""
            }
            NameError::Blank => {
                "a namespace name can't be only whitespace: name the lock family, such as \
                 \"billing:invoice\""
            }
            NameError::CommentEnd => {
                "a namespace name can't contain `*/`: the name labels every lock statement in \
                 an SQL comment (`/* pglock ns=... */`) that `pg_stat_activity` shows, and `*/` \
                 would end it; use letters, digits and `:_-.`"
            }
            NameError::CommentStart => {
                "a namespace name can't contain `/*`: the name labels every lock statement in \
                 an SQL comment (`/* pglock ns=... */`) that `pg_stat_activity` shows, and `/*` \
                 would open another; use letters, digits and `:_-.`"
            }
            NameError::ControlCharacter => {
                "a namespace name can't contain control characters (a line break, a tab, `\\0`, \
                 ...): the name labels every lock in SQL comments and logs; use letters, digits \
                 and `:_-.`"
            }
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for NameError {}

/// Whether `name` may name a namespace; the refusals in the order the
/// module's docs list them.
///
/// ```
/// use pglock_grammar::namespace::{NameError, check};
///
/// const _: () = assert!(check("billing:invoice").is_ok());
/// assert_eq!(check("a */ b"), Err(NameError::CommentEnd));
/// ```
pub const fn check(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if all_whitespace(bytes) {
        return Err(NameError::Blank);
    }
    if contains_pair(bytes, b'*', b'/') {
        return Err(NameError::CommentEnd);
    }
    if contains_pair(bytes, b'/', b'*') {
        return Err(NameError::CommentStart);
    }
    if any_control(bytes) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

const fn all_whitespace(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let (c, width) = decode(bytes, at);
        if !c.is_whitespace() {
            return false;
        }
        at += width;
    }
    true
}

const fn any_control(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let (c, width) = decode(bytes, at);
        if is_control(c) {
            return true;
        }
        at += width;
    }
    false
}

const fn contains_pair(bytes: &[u8], first: u8, second: u8) -> bool {
    let mut at = 1;
    while at < bytes.len() {
        if bytes[at - 1] == first && bytes[at] == second {
            return true;
        }
        at += 1;
    }
    false
}

/// `char::is_control`, which is not a `const fn`: the general category Cc.
const fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// The character that starts at byte `at` of valid UTF-8, and its width.
const fn decode(bytes: &[u8], at: usize) -> (char, usize) {
    let first = bytes[at] as u32;
    let (width, mut value) = if first < 0x80 {
        (1, first)
    } else if first < 0xe0 {
        (2, first & 0x1f)
    } else if first < 0xf0 {
        (3, first & 0x0f)
    } else {
        (4, first & 0x07)
    };
    let mut next = 1;
    while next < width {
        value = (value << 6) | (bytes[at + next] as u32 & 0x3f);
        next += 1;
    }
    match char::from_u32(value) {
        Some(c) => (c, width),
        // Valid UTF-8 always decodes; no name is refused for this.
        None => ('\u{fffd}', width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_shows_something_and_nothing_a_comment_or_a_log_reads_differently() {
        for name in [
            "billing:invoice",
            "a",
            "tenant migrate",
            " padded ",
            "ünïcödé:κλειδί",
            "a/b*c",
            "\u{202e}right-to-left",
        ] {
            assert_eq!(check(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert_eq!(check(""), Err(NameError::Empty));
    }

    #[test]
    fn a_name_of_only_whitespace_is_refused() {
        for name in [" ", "   ", "\t\n", "\u{3000}\u{a0}"] {
            assert_eq!(check(name), Err(NameError::Blank), "{name:?}");
        }
    }

    #[test]
    fn a_comment_delimiter_is_refused() {
        assert_eq!(check("a */ b"), Err(NameError::CommentEnd));
        assert_eq!(check("*/"), Err(NameError::CommentEnd));
        assert_eq!(check("a /* b"), Err(NameError::CommentStart));
        assert_eq!(check("ends with /*"), Err(NameError::CommentStart));
    }

    #[test]
    fn a_control_character_is_refused() {
        for name in ["line\nbreak", "nul\0", "tab\there", "c1\u{85}", "del\u{7f}"] {
            assert_eq!(check(name), Err(NameError::ControlCharacter), "{name:?}");
        }
    }

    #[test]
    fn the_check_runs_in_const_context() {
        const REFUSED: Result<(), NameError> = check("a */ b");
        const ACCEPTED: Result<(), NameError> = check("billing:invoice");
        assert_eq!(REFUSED, Err(NameError::CommentEnd));
        assert_eq!(ACCEPTED, Ok(()));
    }

    #[test]
    fn every_message_says_what_is_accepted() {
        for error in [
            NameError::Empty,
            NameError::Blank,
            NameError::CommentEnd,
            NameError::CommentStart,
            NameError::ControlCharacter,
        ] {
            let message = error.message();
            assert!(message.starts_with("a namespace name can't "), "{message}");
            assert!(
                message.contains("such as \"billing:invoice\"")
                    || message.contains("use letters, digits and `:_-.`"),
                "{message}"
            );
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn the_const_control_test_is_the_standard_library_s() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(is_control(c), c.is_control(), "{c:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decodes_every_character_as_the_standard_library_does(name in "\\PC{0,24}|.{0,24}") {
            let bytes = name.as_bytes();
            let mut at = 0;
            let mut decoded = Vec::new();
            while at < bytes.len() {
                let (c, width) = decode(bytes, at);
                decoded.push(c);
                at += width;
            }
            proptest::prop_assert_eq!(decoded, name.chars().collect::<Vec<_>>());
        }

        #[test]
        fn accepts_exactly_the_names_the_rule_describes(name in ".{0,12}") {
            let expected = !name.trim().is_empty()
                && !name.contains("*/")
                && !name.contains("/*")
                && !name.chars().any(char::is_control);
            proptest::prop_assert_eq!(check(&name).is_ok(), expected, "{:?}", name);
        }
    }
}
