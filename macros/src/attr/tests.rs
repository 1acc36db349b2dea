//! The argument table's own checks.

use super::*;

fn names() -> Vec<&'static str> {
    ARGUMENTS.iter().map(|argument| argument.name).collect()
}

#[test]
fn typos_suggest_the_nearest_argument() {
    let names = names();
    assert_eq!(suggest::closest("timout", &names), Some("timeout"));
    assert_eq!(suggest::closest("tiemout", &names), Some("timeout"));
    assert_eq!(suggest::closest("nowait", &names), Some("no_wait"));
    assert_eq!(
        suggest::closest("sheared", &["exclusive", "shared"]),
        Some("shared")
    );
    assert_eq!(suggest::closest("banana", &names), None);
}

#[test]
fn synonyms_and_bare_modes_suggest_the_argument_meant() {
    assert_eq!(suggest_argument("namespace").as_deref(), Some("ns"));
    assert_eq!(suggest_argument("conn").as_deref(), Some("tx"));
    assert_eq!(suggest_argument("shared").as_deref(), Some("mode = shared"));
    assert_eq!(suggest_argument("savepont").as_deref(), Some("savepoint"));
    assert_eq!(suggest_argument("banana"), None);
}

#[test]
fn the_accepted_lists_name_every_row_in_order() {
    assert_eq!(
        accepted_arguments(),
        "accepted arguments are `ns`, `key`, `mode`, `timeout`, `no_wait`, `skip`, \
         `savepoint`, `permits`, `tx` and `crate`"
    );
    assert_eq!(
        accepted_modes(),
        "accepted modes are `exclusive` (the default) and `shared`"
    );
}

#[test]
fn every_form_is_written_with_its_argument_s_name() {
    for argument in ARGUMENTS {
        if let Takes::Value { forms, .. } = argument.takes {
            assert!(!forms.is_empty(), "{}", argument.name);
            for form in forms {
                let prefix = format!("{} = ", argument.name);
                assert!(form.written.starts_with(&prefix), "{}", form.written);
            }
        }
    }
    assert!(MODES.iter().any(|(name, _)| *name == MODE.value()));
}

#[test]
fn a_missing_argument_is_shown_with_its_forms() {
    let key = ARGUMENTS
        .iter()
        .find(|argument| argument.name == "key")
        .unwrap();
    assert_eq!(
        missing(key, key.required.unwrap()),
        "missing `key`: say what to lock, such as `key = invoice_id` (any expression over \
         the parameters whose type implements `pglock::LockKey`) or `key = [from, to]` \
         (several keys)"
    );
}

#[test]
fn no_word_is_the_synonym_of_two_arguments_or_an_argument_itself() {
    let names = names();
    let mut synonyms: Vec<&str> = ARGUMENTS
        .iter()
        .flat_map(|argument| argument.synonyms.iter().copied())
        .collect();
    let count = synonyms.len();
    synonyms.sort_unstable();
    synonyms.dedup();
    assert_eq!(synonyms.len(), count);
    assert!(synonyms.iter().all(|synonym| !names.contains(synonym)));
}
