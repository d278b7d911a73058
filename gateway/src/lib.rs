//! The parklight gateway. In this version the `parklight` binary runs the park
//! simulator (`parklight sim`); the gateway service joins it in later versions.
//!
//! - [`logging`]: tracing setup, human or JSON.
//! - [`signals`]: one cancellation token for SIGINT and SIGTERM.

pub mod config;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod store;
