//! Which namespace, and which key, a lock id belongs to, as far as can be
//! known without the key.
//!
//! A bigint id is `key_value ^ mask`: from the id alone no namespace can be
//! told. What can be known:
//!
//! - a statement's marker names the namespace of the lock it waits for,
//!   and so of that id's holders (the inspection does this);
//! - a pair id starts with its namespace's class, so a `--ns` name whose
//!   `named_pair` class it is names it;
//! - a named namespace's mask is `sha256(name)`, so for a name (a marker's,
//!   or one given with `--ns`) `id ^ mask` is the key value; when that is a
//!   small integer, the key is that integer. By chance an unrelated id does
//!   so once in 2^31 tries: close enough to certain to say, and said as
//!   "by --ns" where no marker backs it.
//!
//! Uuid, string, bytes and tuple keys hash to 64 random-looking bits, and
//! stay unknown until someone waits for them.

use std::collections::HashMap;

use pglock_runtime::{LockId, Namespace};

use crate::failure::Failure;

/// Where a namespace was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A statement's `/* pglock ns=… */` marker: this backend's, or that of
    /// a backend waiting for the same id.
    Marker,
    /// A `--ns` name, matched by id.
    Ns,
}

impl Source {
    /// The name JSON output gives this source.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Marker => "marker",
            Source::Ns => "ns",
        }
    }
}

/// What is known of a lock id's namespace and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attribution {
    pub(crate) namespace: Option<String>,
    pub(crate) source: Option<Source>,
    /// The integer key, when the key value is a small integer.
    pub(crate) key: Option<i64>,
}

/// The namespace names given with `--ns`, hashed as the library does.
#[derive(Debug, Default)]
pub(crate) struct Names {
    given: Vec<Given>,
    // Masks of marker labels, computed once per label.
    masks: HashMap<String, Option<i64>>,
}

#[derive(Debug)]
struct Given {
    name: String,
    mask: i64,
    class: Option<i32>,
}

impl Names {
    pub(crate) fn new(names: &[String]) -> Result<Self, Failure> {
        let mut given = Vec::with_capacity(names.len());
        for name in names {
            // The rule the library and the attribute apply, in their words.
            pglock_grammar::namespace::check(name)
                .map_err(|refused| Failure::usage(format!("--ns {name:?}: {refused}")))?;
            let mask = mask_of(name).expect("a name the rule accepts");
            // `named_pair` takes a `'static` name, as services declare it;
            // the few names of one command line live as long as it does.
            let name_static: &'static str = Box::leak(name.clone().into_boxed_str());
            let class = match Namespace::named_pair(name_static).id(&0_i64) {
                LockId::Pair(class, _) => Some(class),
                LockId::BigInt(_) => None,
            };
            given.push(Given {
                name: name.clone(),
                mask,
                class,
            });
        }
        Ok(Self {
            given,
            masks: HashMap::new(),
        })
    }

    /// What is known of `id`, given the namespace a marker named for it.
    pub(crate) fn attribute(&mut self, id: LockId, marker: Option<&str>) -> Attribution {
        if let Some(label) = marker {
            let key = match id {
                LockId::BigInt(id) => {
                    let mask = *self
                        .masks
                        .entry(label.to_owned())
                        .or_insert_with(|| mask_of(label));
                    mask.and_then(|mask| small_int_key(id, mask))
                }
                LockId::Pair(..) => None,
            };
            return Attribution {
                namespace: Some(label.to_owned()),
                source: Some(Source::Marker),
                key,
            };
        }
        for given in &self.given {
            let (matched, key) = match id {
                LockId::BigInt(id) => {
                    let key = small_int_key(id, given.mask);
                    (key.is_some(), key)
                }
                LockId::Pair(class, _) => (Some(class) == given.class, None),
            };
            if matched {
                return Attribution {
                    namespace: Some(given.name.clone()),
                    source: Some(Source::Ns),
                    key,
                };
            }
        }
        Attribution::default()
    }
}

/// The mask `Namespace::named(name)` applies, from the library; `None` for
/// a name the namespace-name rule refuses.
fn mask_of(name: &str) -> Option<i64> {
    // The id of key value 0 is the mask itself.
    Namespace::try_named(name).ok()?.id(&0_i64).bigint()
}

/// The key, when `id ^ mask` is an integer within ±2^32: what an integer
/// key (a job number, a tenant id) gives, and an unrelated id almost never.
fn small_int_key(id: i64, mask: i64) -> Option<i64> {
    let value = id ^ mask;
    (value.unsigned_abs() < 1 << 32).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    static INVOICES: Namespace = Namespace::named("billing:invoice");
    static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");

    fn names(list: &[&str]) -> Names {
        Names::new(&list.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_marker_names_the_namespace_and_recovers_an_integer_key() {
        let attribution = names(&[]).attribute(INVOICES.id(&-7_i64), Some("billing:invoice"));
        assert_eq!(attribution.namespace.as_deref(), Some("billing:invoice"));
        assert_eq!(attribution.source, Some(Source::Marker));
        assert_eq!(attribution.key, Some(-7));
    }

    #[test]
    fn a_marker_recovers_no_key_from_a_uuid() {
        let attribution = names(&[]).attribute(
            INVOICES.id(&uuid::Uuid::from_u128(
                0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            )),
            Some("billing:invoice"),
        );
        assert_eq!(attribution.key, None);
    }

    #[test]
    fn a_given_name_matches_integer_keys_and_pair_classes_only() {
        let mut names = names(&["billing:invoice", "tenant:migrate"]);
        let integer = names.attribute(INVOICES.id(&2026_i64), None);
        assert_eq!(integer.namespace.as_deref(), Some("billing:invoice"));
        assert_eq!(integer.source, Some(Source::Ns));
        assert_eq!(integer.key, Some(2026));

        let pair = names.attribute(TENANTS.id(&"acme"), None);
        assert_eq!(pair.namespace.as_deref(), Some("tenant:migrate"));

        let text = names.attribute(INVOICES.id(&"abc"), None);
        assert_eq!(text, Attribution::default(), "a string key can't be told");
    }

    #[test]
    fn a_name_the_library_refuses_is_refused() {
        assert!(Names::new(&[String::new()]).is_err());
        assert!(Names::new(&["a */ b".to_owned()]).is_err());
    }
}
