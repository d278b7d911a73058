//! Where reports come from.

pub mod mqtt;
