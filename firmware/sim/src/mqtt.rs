//! Broker connections: options from a URL, and the one TLS crypto provider.

use rumqttc::MqttOptions;

/// A broker URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerUrlError {
    /// Not a URL.
    #[error("broker URL {url:?}: {source}")]
    Parse {
        /// The URL given, credentials hidden.
        url: String,
        /// Why.
        source: url::ParseError,
    },
    /// A URL rumqttc cannot use (scheme, options).
    #[error("broker URL {url:?}: {source} (use mqtt://host:port or mqtts://host:port)")]
    Options {
        /// The URL given, credentials hidden.
        url: String,
        /// Why.
        source: rumqttc::OptionError,
    },
}

/// `url` with whatever stands between `://` and the last `@` (credentials) hidden, so it
/// can be shown in an error or a log.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// MQTT options for `url` (`mqtt://host:port`, `mqtts://` for TLS with the system's
/// roots; `user:password@` in the URL sets credentials) and a client id.
pub fn broker_options(url: &str, client_id: &str) -> Result<MqttOptions, BrokerUrlError> {
    let mut parsed = url::Url::parse(url).map_err(|source| BrokerUrlError::Parse {
        url: redacted(url),
        source,
    })?;
    parsed.query_pairs_mut().append_pair("client_id", client_id);
    MqttOptions::try_from(parsed).map_err(|source| BrokerUrlError::Options {
        url: redacted(url),
        source,
    })
}

/// Installs rustls' `ring` provider for this process. rustls panics at the first TLS
/// connection when no provider or two are compiled in and none was chosen; choosing one
/// at start makes that impossible. Idempotent.
pub fn install_crypto_provider() {
    // An error means one is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let options = broker_options("mqtt://127.0.0.1:1884", "pole-1").unwrap();
        assert_eq!(options.broker_address(), ("127.0.0.1".to_owned(), 1884));
        assert_eq!(options.client_id(), "pole-1");
        let options = broker_options("mqtt://user:secret@broker", "n").unwrap();
        assert_eq!(options.broker_address().1, 1883);
        assert_eq!(
            options.credentials().map(|login| login.username),
            Some("user".to_owned())
        );
        install_crypto_provider();
        assert_eq!(
            broker_options("mqtts://broker", "n")
                .unwrap()
                .broker_address()
                .1,
            8883
        );
        assert!(broker_options("http://broker", "n").is_err());
        assert!(broker_options("not a url", "n").is_err());
        // Errors never show credentials.
        for bad in ["ftp://user:s3cret@broker", "mqtt://user:s3cret@bro ker"] {
            let error = broker_options(bad, "n").unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
            assert!(error.contains("***@"), "{error}");
        }
    }
}
