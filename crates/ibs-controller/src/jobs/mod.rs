//! One module per job kind.

pub mod validate;
