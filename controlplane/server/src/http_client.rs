//! HTTP clients with TLS from a [`TlsClientConfig`] (private CA, client
//! certificate), rebuilt when the certificate files change: the agent's
//! remote write and scrapes, the ruler's remote write and Alertmanager
//! notifications, the querier's calls to rulers. And the
//! `--http-client.tls-*` flags of the components that call other Strata
//! servers over HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::{ALPN_HTTP1, ClientTls, TlsClientConfig};

/// One HTTP client; [`HttpClient::current`] gives the client to use for
/// the next request.
pub struct HttpClient {
    tls: Option<Arc<ClientTls>>,
    timeout: std::time::Duration,
    user_agent: &'static str,
    built: std::sync::Mutex<(u64, reqwest_rustls::Client)>,
}

impl HttpClient {
    /// A client verifying servers with `tls_config` (or the system roots
    /// when `https` without one), reloading its certificates when they
    /// change; plain HTTP when neither.
    pub fn with_tls(
        tls_config: Option<TlsClientConfig>,
        https: bool,
        timeout: std::time::Duration,
        user_agent: &'static str,
    ) -> Result<HttpClient, String> {
        let tls = if https || tls_config.is_some() {
            let cfg = tls_config.unwrap_or_default();
            let tls = ClientTls::new(cfg, ALPN_HTTP1, "tls_config").map_err(|e| e.to_string())?;
            tls.watch(std::time::Duration::from_secs(5));
            Some(tls)
        } else {
            None
        };
        let client = Self::build(tls.as_deref(), timeout, user_agent)?;
        let generation = tls.as_ref().map_or(0, |t| t.generation());
        Ok(HttpClient { tls, timeout, user_agent, built: std::sync::Mutex::new((generation, client)) })
    }

    fn build(
        tls: Option<&ClientTls>,
        timeout: std::time::Duration,
        user_agent: &'static str,
    ) -> Result<reqwest_rustls::Client, String> {
        let mut b = reqwest_rustls::Client::builder().timeout(timeout).user_agent(user_agent);
        if let Some(t) = tls {
            b = b.use_preconfigured_tls((*t.config()).clone());
        }
        b.build().map_err(|e| e.to_string())
    }

    /// The client for the next request (rebuilt after a certificate reload;
    /// connections already open keep the previous certificates).
    pub fn current(&self) -> reqwest_rustls::Client {
        let Ok(mut g) = self.built.lock() else { return reqwest_rustls::Client::new() };
        if let Some(t) = &self.tls {
            let now = t.generation();
            if now != g.0 {
                match Self::build(Some(t), self.timeout, self.user_agent) {
                    Ok(c) => *g = (now, c),
                    Err(e) => tracing::error!(error = %e, "cannot rebuild the HTTP client; the previous one stays"),
                }
            }
        }
        g.1.clone()
    }
}

/// TLS for HTTP clients calling other Strata servers, as flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HttpClientTlsArgs {
    /// CA certificates (PEM) that verify the https:// Strata servers this component calls (remote write to the
    /// ingesters, rulers, Alertmanager); default: the system's.
    #[arg(id = "http-client.tls-ca-file", long = "http-client.tls-ca-file")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to HTTP servers that ask for one.
    #[arg(id = "http-client.tls-cert-file", long = "http-client.tls-cert-file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --http-client.tls-cert-file.
    #[arg(id = "http-client.tls-key-file", long = "http-client.tls-key-file")]
    pub key_file: Option<PathBuf>,
}

impl HttpClientTlsArgs {
    /// The clients' TLS configuration; `None`: the system's roots for
    /// `https://` URLs.
    pub fn config(&self) -> Option<TlsClientConfig> {
        let any = self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        any.then(|| TlsClientConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ..Default::default()
        })
    }
}
