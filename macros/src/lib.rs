//! The `#[advisory_lock]` attribute of pglock. Use it through the `pglock`
//! crate, which re-exports it and the runtime it expands into.
