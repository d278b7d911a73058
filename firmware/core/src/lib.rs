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
//! 11.4 KiB (measured on x86_64: 11 712 bytes), 136 bytes per buffered report plus about
//! 3 KiB of state, and a test holds it to [`NODE_RAM_BUDGET`]. A board with little RAM
//! picks a smaller `N`. Encoding a message uses a further 1 KiB of stack.
//!
//! # Non-volatile writes
//! Flash endures a limited number of erase cycles (typically 10 000 to 100 000 a
//! sector), so the node asks for writes ([`Action::Persist`]) only this often:
//! - the boot counter ([`Persist::Boot`]): once per start;
//! - the running config ([`Persist::Config`]): once per config applied; a config the
//!   node already runs, or refuses, writes nothing;
//! - the report buffer ([`Persist::Reports`]): once per report window, when it closes
//!   (1 440 times a day at the default 60 s). Acks and drops change the buffer in RAM
//!   and reach memory with the next window's write, so after a restart a node may
//!   resend a report already acknowledged, which the gateway stores only once;
//! - the lamp's learned contribution to its own light reading ([`Persist::LampLux`]):
//!   when first learned, then when it has moved by more than a quarter from what was
//!   written, at most once an hour.
//!
//! The buffer's writes dominate: at one a minute a single sector of 100 000 cycles
//! would wear out in about 70 days, so a board spreads them over many sectors (wear
//! levelling) or keeps the buffer in FRAM. A test counts the writes of a busy night.
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

pub use node::{Action, CLOCK_AHEAD_MS, Identity, Input, Node, Now, Outbox, Settings};
pub use nv::{NonVolatile, Persist, Restored};

/// The most RAM a [`Node`] with the default buffer may take, in bytes.
pub const NODE_RAM_BUDGET: usize = 12 * 1024;
