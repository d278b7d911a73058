//! Links the firmware crates into a no_std artifact; see Cargo.toml.
#![no_std]

use parklight_core::{Action, Identity, Input, Node, Now, Restored, Settings};
use parklight_protocol::{DEFAULT_PREFIX, Id, Message, Telemetry};

/// Starts a node, feeds it one tick and decodes one payload, so both crates are linked.
#[unsafe(no_mangle)]
pub extern "C" fn parklight_nostd_check(payload: *const u8, len: usize) -> u32 {
    let identity = Identity {
        prefix: heapless::String::try_from(DEFAULT_PREFIX).unwrap_or_default(),
        site: Id::new("site").unwrap_or_default(),
        node: Id::new("node").unwrap_or_default(),
    };
    let mut actions = 0u32;
    let mut count = |_: Action<'_>| actions += 1;
    let now = Now {
        up_ms: 0,
        net_ms: 0,
    };
    let mut node: Node = Node::start(
        identity,
        Settings::default(),
        Restored::default(),
        false,
        now,
        &mut count,
    );
    node.handle(now, Input::Tick, &mut count);
    let bytes = if payload.is_null() {
        &[][..]
    } else {
        // SAFETY: the caller passes a valid buffer of `len` bytes.
        unsafe { core::slice::from_raw_parts(payload, len) }
    };
    actions + u32::from(Telemetry::decode(bytes).is_ok())
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
