//! How a message shows what an argument accepts: each way of writing it is a
//! [`Form`], defined once beside the code that reads it, and every message
//! that shows an example takes it from there.

/// One way to write an argument, as a user would (`key = [from, to]`), and
/// what it means, when that needs saying.
#[derive(Clone, Copy)]
pub(crate) struct Form {
    pub(crate) written: &'static str,
    pub(crate) meaning: Option<&'static str>,
}

impl Form {
    /// The value alone: `[from, to]` of `key = [from, to]`.
    pub(crate) fn value(&self) -> &'static str {
        self.written
            .split_once(" = ")
            .map_or(self.written, |(_, value)| value)
    }
}

/// "`a` (what a means) or `b`".
pub(crate) fn described(forms: &[Form]) -> String {
    let forms = forms.iter().map(|form| match form.meaning {
        Some(meaning) => format!("`{}` ({meaning})", form.written),
        None => format!("`{}`", form.written),
    });
    listed(forms, "or")
}

/// "`a` or `b`".
pub(crate) fn written(forms: &[Form]) -> String {
    listed(forms.iter().map(|form| format!("`{}`", form.written)), "or")
}

/// "a", "a and b", "a, b and c" (or "or").
pub(crate) fn listed(items: impl Iterator<Item = String>, last_joined_by: &str) -> String {
    let mut items: Vec<String> = items.collect();
    let last = items.pop().unwrap_or_default();
    if items.is_empty() {
        last
    } else {
        format!("{} {last_joined_by} {last}", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Form = Form {
        written: "key = id",
        meaning: Some("one key"),
    };
    const MANY: Form = Form {
        written: "key = [a, b]",
        meaning: None,
    };

    #[test]
    fn forms_are_listed_with_their_meaning() {
        assert_eq!(
            described(&[ONE, MANY]),
            "`key = id` (one key) or `key = [a, b]`"
        );
        assert_eq!(written(&[ONE, MANY]), "`key = id` or `key = [a, b]`");
        assert_eq!(MANY.value(), "[a, b]");
    }

    #[test]
    fn lists_join_their_last_item_with_the_word_given() {
        let items = |n: usize| (0..n).map(|i| i.to_string());
        assert_eq!(listed(items(1), "and"), "0");
        assert_eq!(listed(items(2), "or"), "0 or 1");
        assert_eq!(listed(items(3), "and"), "0, 1 and 2");
    }
}
