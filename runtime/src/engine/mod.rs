//! The engine, private: the try and the wait every front end shares, the
//! cancellation of abandoned waits, and the events that say what happened.

pub(crate) mod cancel;
pub(crate) mod events;
pub(crate) mod measure;
pub(crate) mod wait;
