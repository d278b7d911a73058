//! The HTTP listener: `GET /metrics` in Prometheus text format, and the [`crate::api`].

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// The process-wide metrics recorder (installed once, on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in crate::metrics::buckets() {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .unwrap_or_else(|_| PrometheusBuilder::new());
            }
            let handle = builder.install_recorder().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            });
            crate::metrics::register();
            handle
        })
        .clone()
}

/// Binds `listen` (so a taken port fails the start) and serves `/metrics` and `api` until
/// `stop`.
pub async fn serve(
    listen: SocketAddr,
    api: crate::api::Shared,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let handle = metrics_handle();
    let (api, _) = crate::api::router(api);
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .merge(api);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving the API and /metrics");
    Ok(tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "HTTP server failed");
        }
    }))
}
