//! What must survive a restart: the boot counter, the running config, the report buffer,
//! the lamp's learned contribution to its own light reading.

use parklight_protocol::{Config, Telemetry};

use crate::node::Node;

/// Which part of the node's state must be written to non-volatile memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// The boot counter.
    Boot,
    /// The running config.
    Config,
    /// The report buffer.
    Reports,
    /// The lux the lamp adds to its own light sensor per percent of level, as learned
    /// ([`Node::lamp_lux_per_level`]).
    LampLux,
}

/// What a node finds in non-volatile memory at start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Restored<const N: usize> {
    /// The boot counter of the last start (0 on a new node).
    pub boot: u32,
    /// The last applied config.
    pub config: Option<Config>,
    /// Reports still unacknowledged, oldest first.
    pub reports: heapless::Vec<Telemetry, N>,
    /// The lamp's learned contribution to its own light reading (lux per percent of
    /// level), once learned.
    pub lamp_lux_per_level: Option<f64>,
}

/// Non-volatile memory (flash, FRAM, a file in the simulator) for a node's state.
///
/// The node asks for writes with [`crate::Action::Persist`] (the crate docs say
/// [how often](crate#non-volatile-writes)); the board calls
/// [`NonVolatile::save`] with the node, which reads what it needs from it. A store that
/// cannot keep reports may skip [`Persist::Reports`]: the next birth's `oldest` then
/// tells the gateway what was lost.
pub trait NonVolatile<const N: usize> {
    /// Storage error.
    type Error;

    /// What the last run left (the default on a new node).
    fn load(&mut self) -> Result<Restored<N>, Self::Error>;

    /// Writes one part of `node`'s state.
    fn save(&mut self, what: Persist, node: &Node<N>) -> Result<(), Self::Error>;
}
