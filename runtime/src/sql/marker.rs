//! The comment marker every lock statement starts with,
//! `/* pglock ns=<label> */`, so that `pg_stat_activity.query` shows what a
//! backend waits on. Labels are sanitised: no name can end the comment.
//!
//! A semaphore's statements say so after the label:
//! `/* pglock ns=<label>; permits=N */` for its wait, which knows N, and
//! `/* pglock ns=<label>; permits */` for its try, prepared once for every
//! N. A sanitised label has no `;`, so the suffix can't be part of one.

/// The longest namespace label written into a marker; longer labels are
/// cut (the lock id always uses the whole name).
pub(crate) const MAX_LABEL: usize = 64;

const PREFIX: &str = "/* pglock ns=";

/// `/* pglock ns=<label> */` for a label already made safe by [`sanitize`].
pub(crate) fn comment(sanitised_label: &str) -> String {
    format!("{PREFIX}{sanitised_label} */")
}

/// The marker of several namespaces' locks in one statement: their labels
/// (each already made safe by [`sanitize`], which never keeps a comma),
/// sorted, de-duplicated, joined by commas and bounded.
pub(crate) fn comment_for_labels<'a>(sanitised_labels: impl Iterator<Item = &'a str>) -> String {
    let mut labels: Vec<&str> = sanitised_labels.collect();
    labels.sort_unstable();
    labels.dedup();
    let joined: String = labels.join(",").chars().take(MAX_LABEL).collect();
    comment(&joined)
}

/// What follows the label in a semaphore's marker.
const PERMITS: &str = "; permits";

/// The marker of a semaphore's statement, from its namespace's `marker`:
/// with the number of permits when the statement knows it.
pub(crate) fn with_permits(marker: &str, permits: Option<u32>) -> String {
    let label = marker.strip_suffix(" */").unwrap_or(marker);
    match permits {
        Some(permits) => format!("{label}{PERMITS}={permits} */"),
        None => format!("{label}{PERMITS} */"),
    }
}

/// The whole text between the prefix and the end of a leading marker.
fn body(query: &str) -> Option<&str> {
    let rest = query.trim_start().strip_prefix(PREFIX)?;
    let end = rest.find(" */")?;
    Some(&rest[..end])
}

/// The namespace a statement's leading marker names.
pub(crate) fn parse(query: &str) -> Option<&str> {
    let body = body(query)?;
    Some(body.find(PERMITS).map_or(body, |end| &body[..end]))
}

/// What a leading marker says of a semaphore: `None` for a lock's
/// statement, `Some(None)` for a semaphore's of unknown size (its try),
/// `Some(Some(N))` for one of N permits (its wait).
pub(crate) fn parse_permits(query: &str) -> Option<Option<u32>> {
    let body = body(query)?;
    let rest = &body[body.find(PERMITS)? + PERMITS.len()..];
    Some(rest.strip_prefix('=').and_then(|n| n.parse().ok()))
}

/// Replaces every character outside a fixed, comment-safe set with `?` and
/// cuts the result to [`MAX_LABEL`] characters.
pub(crate) fn sanitize(label: &str) -> String {
    label
        .chars()
        .take(MAX_LABEL)
        .map(|c| {
            if c.is_alphanumeric()
                || matches!(c, ':' | '_' | '-' | '.' | '@' | '#' | '+' | '=' | ' ')
            {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// When the statement of pglock's that a backend runs began (`$1`: its
/// pid), as text; no row when it runs none. A statement is told from the
/// next one on the same backend by this time.
pub(crate) const RUNNING_SINCE: &str = "SELECT query_start::text FROM pg_catalog.pg_stat_activity \
     WHERE pid = $1 AND state = 'active' AND starts_with(query, '/* pglock ')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_label_keeps_safe_characters_only() {
        assert_eq!(sanitize("billing:invoice"), "billing:invoice");
        assert_eq!(sanitize("a*/ DROP TABLE x; /*"), "a?? DROP TABLE x? ??");
        assert_eq!(sanitize("line\nbreak\0"), "line?break?");
        assert_eq!(sanitize(&"x".repeat(10_000)).len(), MAX_LABEL);
    }

    #[test]
    fn a_set_marker_joins_its_labels_with_commas() {
        let labels = ["jobs", "billing:invoice", "jobs"].map(sanitize);
        let marker = comment_for_labels(labels.iter().map(String::as_str));
        assert_eq!(marker, "/* pglock ns=billing:invoice,jobs */");
        assert_eq!(parse(&marker), Some("billing:invoice,jobs"));
        let long = [sanitize(&"a".repeat(60)), sanitize(&"b".repeat(60))];
        let marker = comment_for_labels(long.iter().map(String::as_str));
        assert_eq!(
            parse(&marker).map(|label| label.chars().count()),
            Some(MAX_LABEL)
        );
    }

    #[test]
    fn reads_the_namespace_from_a_leading_marker_only() {
        assert_eq!(
            parse("/* pglock ns=billing:invoice */ SELECT 1"),
            Some("billing:invoice")
        );
        assert_eq!(parse("SELECT 1 /* pglock ns=x */"), None);
        assert_eq!(parse("/* pglock ns=unterminated"), None);
        assert_eq!(parse(&comment("a b")), Some("a b"));
    }

    #[test]
    fn a_semaphores_marker_says_so_after_its_label() {
        let marker = comment("imports:tenant");
        let wait = with_permits(&marker, Some(3));
        assert_eq!(wait, "/* pglock ns=imports:tenant; permits=3 */");
        assert_eq!(parse(&format!("{wait} DO $$ $$")), Some("imports:tenant"));
        assert_eq!(parse_permits(&format!("{wait} DO $$ $$")), Some(Some(3)));
        let try_ = with_permits(&marker, None);
        assert_eq!(parse(&try_), Some("imports:tenant"));
        assert_eq!(parse_permits(&try_), Some(None));
        assert_eq!(parse_permits(&marker), None);
        // A label can't fake the suffix: `;` is not kept.
        let label = sanitize("x; permits=9");
        assert_eq!(parse_permits(&comment(&label)), None);
    }

    #[test]
    fn the_prefix_of_running_since_is_the_markers() {
        assert!(RUNNING_SINCE.contains(&format!("'{}", &PREFIX[..PREFIX.len() - 3])));
    }

    proptest::proptest! {
        #[test]
        fn no_label_can_end_or_break_the_marker_comment(label in ".{0,300}") {
            let sanitised = sanitize(&label);
            proptest::prop_assert!(!sanitised.contains("*/"));
            proptest::prop_assert!(!sanitised.contains("/*"));
            proptest::prop_assert!(!sanitised.chars().any(char::is_control));
            proptest::prop_assert!(sanitised.chars().count() <= MAX_LABEL);
            proptest::prop_assert_eq!(
                sanitised.chars().count(),
                label.chars().count().min(MAX_LABEL)
            );
        }

        #[test]
        fn safe_labels_are_kept_as_they_are(label in "[a-z0-9:_.@#+= -]{1,64}") {
            proptest::prop_assert_eq!(sanitize(&label), label);
        }
    }
}
