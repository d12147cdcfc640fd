//! Per-subscription mailboxes.
//!
//! Today this holds the scheduling state machine ([`state`]), model-checked
//! in `loom-tests/tests/mailbox_state.rs`; the bounded priority lanes and
//! overflow policies join it as the bus runtime is built.

// The state machine's items are `pub` so that `loom-tests` can reach them
// through `crate::__loom` (compiled only under `cfg(topicbus_loom)`).
#[allow(unreachable_pub)]
pub(crate) mod state;
