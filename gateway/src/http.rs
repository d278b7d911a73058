//! The HTTP listener: `GET /metrics` in Prometheus text format, the [`crate::api`] and
//! the dashboard ([`crate::web`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

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

/// Binds `[http] listen` (so a taken port fails the start) and serves `/metrics` and `api`
/// until `stop`, over HTTPS when a certificate is configured.
pub async fn serve(
    http: &HttpConfig,
    api: crate::api::Shared,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let handle = metrics_handle();
    tokio::spawn(crate::api::live::run(api.clone(), stop.clone()));
    let (api, _) = crate::api::router(api);
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .merge(crate::web::router())
        .merge(api);
    let tls = match http.tls() {
        Some(_) => Some(tls_config(http).map_err(std::io::Error::other)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(http.listen).await?;
    let address = listener.local_addr()?;
    if let Some(tls) = tls {
        tracing::info!(%address, "serving the API and /metrics over HTTPS");
        return Ok(tokio::spawn(serve_tls(listener, app, tls, stop)));
    }
    tracing::info!(%address, "serving the API and /metrics");
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

/// The HTTPS server configuration from `[http]`'s certificate chain and key files.
pub fn tls_config(http: &HttpConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some((cert, key)) = http.tls() else {
        return Err("tls_cert and tls_key: both are needed".into());
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate in it", cert.display()));
    }
    let pem = crate::config::secret(None, Some(key)).map_err(|e| format!("tls_key: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("tls_cert and tls_key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connections served over TLS at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
/// How long a client has for its TLS handshake, and then for each request's headers.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells browsers to come back over HTTPS only, for a year.
async fn strict_transport(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// Serves `app` over TLS until `stop`: each connection's handshake (within 10 s) and
/// requests on a task of its own.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let app = app.layer(axum::middleware::map_response(strict_transport));
    loop {
        let Ok(slot) = connections.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "HTTPS: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let (acceptor, stop) = (acceptor.clone(), stop.clone());
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tokio::spawn(async move {
            let _slot = slot;
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "HTTPS: handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS: handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}
