//! The logic of a parklight light controller, `#![no_std]` and allocation-free.
//!
//! - [`node`]: the [`Node`] state machine — inputs and the time in, actions out — that a
//!   board and the simulator both run unchanged.
//! - [`control`]: the lamp level from the night profile, motion boost, override and the
//!   photocell fallback.
//! - [`buffer`]: the report buffer of the stored-acknowledgement protocol; [`nv`]: what
//!   survives a restart.
//! - [`window`]: what one report summarises.
//! - [`solar`], [`tz`]: sunset, sunrise and sun altitude; POSIX TZ local time.
//! - Drivers over embedded-hal 1.0: [`sensor`] (auto-ranging VEML6030/VEML7700 behind
//!   [`sensor::LightSensor`]), [`motion`] (PIR), [`lamp`] (PWM with smooth ramps).
//!
//! # Memory
//! A [`Node`] with the default buffer of [`node::DEFAULT_BUFFER`] reports takes about
//! 11.4 KiB (measured on x86_64: 11 672 bytes), 136 bytes per buffered report plus about
//! 3 KiB of state, and a test holds it to [`NODE_RAM_BUDGET`]. A board with little RAM
//! picks a smaller `N`. Encoding a message uses a further 1 KiB of stack.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod buffer;
pub mod control;
pub mod lamp;
pub mod motion;
pub mod node;
pub mod nv;
pub mod sensor;
pub mod solar;
pub mod tz;
pub mod window;

pub use node::{Action, Identity, Input, Node, Now, Outbox, Settings};
pub use nv::{NonVolatile, Persist, Restored};

/// The most RAM a [`Node`] with the default buffer may take, in bytes.
pub const NODE_RAM_BUDGET: usize = 12 * 1024;
