//! One shutdown signal for the whole process.

use tokio_util::sync::CancellationToken;

/// A token cancelled at the first SIGINT or SIGTERM; a second one ends the process at
/// once (exit code 130). Nothing acknowledged is lost either way: reports are
/// acknowledged only once they are stored.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping (a second Ctrl-C stops at once)");
        cancel.cancel();
        wait_for_signal().await;
        eprintln!("parklight: stopped at once");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
