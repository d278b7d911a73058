//! Where reports go besides the embedded store.

pub mod influxdb;
