//! Per-subscription mailboxes.
//!
//! Today this holds the scheduling state machine ([`state`]) and the bounded
//! priority lanes with their overflow policies ([`lanes`]), both
//! model-checked in `loom-tests/`; the bus runtime wires them to the worker
//! pool.

// Items are `pub` so that `loom-tests` can reach them through
// `crate::__loom` (compiled only under `cfg(topicbus_loom)`).
#[allow(unreachable_pub)]
pub(crate) mod lanes;
#[allow(unreachable_pub)]
pub(crate) mod state;
