//! The engine, private: the try and the wait every front end shares, the
//! guess of which locks are busy, the cancellation of abandoned waits, and
//! the events that say what happened, and the transaction begun with its
//! lock.

pub(crate) mod begin;
pub(crate) mod cancel;
pub(crate) mod contention;
pub(crate) mod events;
pub(crate) mod measure;
pub(crate) mod permit;
pub(crate) mod wait;
