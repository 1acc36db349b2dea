//! Captures the `pglock` events a test emits.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured event: its level and its fields, as text.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: tracing::Level,
    pub fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    pub fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    /// Polls `waiter` until an event says it waits (an in-process wait
    /// sends nothing the server could show); a waiter that ends first
    /// fails the test, which expected it to wait until `until`.
    pub async fn until_it_waits<F>(&self, waiter: &mut Pin<&mut F>, until: &str)
    where
        F: Future<Output: std::fmt::Debug>,
    {
        while !self.events().iter().any(|event| {
            event
                .fields
                .get("message")
                .is_some_and(|message| message.contains("waiting"))
        }) {
            tokio::select! {
                biased;
                outcome = waiter.as_mut() => panic!("ended before {until}: {outcome:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
}

struct FieldsToText<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldsToText<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "pglock" {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut FieldsToText(&mut fields));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// Installs a subscriber that captures into a fresh [`Capture`] on this
/// thread until the guard is dropped.
pub fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    (capture, guard)
}
