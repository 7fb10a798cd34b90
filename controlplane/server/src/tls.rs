//! TLS for every Strata listener and client, written once (rustls with the
//! `ring` provider; no OpenSSL).
//!
//! - [`TlsServerConfig`]: Prometheus' `tls_server_config` (the web config's
//!   section, and the `--grpc.tls-*` flags): certificate and key, and
//!   optionally a CA that client certificates must chain to (mutual TLS).
//! - [`TlsClientConfig`]: Prometheus' `tls_config` (remote-write endpoints,
//!   the `--grpc-client.tls-*` flags): the CA that verifies the server (the
//!   system's roots without one), a client certificate, a server name.
//!
//! [`ServerTls`] and [`ClientTls`] hold the live rustls configuration and
//! re-read the files on SIGHUP and when they change, so certificates
//! rotate without a restart: new connections use the new ones, open
//! connections keep theirs. A reload that fails (a key that does not match,
//! a half-written file) keeps the previous configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> TlsError {
    TlsError::Invalid(msg.into())
}

/// Prometheus' `tls_server_config` (the parts rustls supports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain the server presents.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `NoClientCert` (default without a CA), `VerifyClientCertIfGiven`,
    /// `RequireAndVerifyClientCert` (default with a CA).
    #[serde(default)]
    pub client_auth_type: Option<String>,
    /// `TLS12` (default) or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
}

/// Prometheus' `tls_config` for clients (the parts rustls supports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM CA certificates that verify the server; the system's roots
    /// without it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate presented to servers that ask for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host of the
    /// URL or address).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Refused: Strata always verifies the server (give `ca_file`).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `TLS12` (default) or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(min: Option<&str>, at: &str) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TlsError> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        None | Some("TLS12") => Ok(&BOTH),
        Some("TLS13") => Ok(&TLS13),
        Some(v) => Err(invalid(format!("{at}.min_version: {v:?} is not supported (TLS12 or TLS13)"))),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{what} {}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{what} {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(format!("{what} {}: no PEM private key in it ({e})", path.display())))
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(what, path)? {
        roots.add(c).map_err(|e| invalid(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

impl TlsServerConfig {
    /// The files it reads (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert_file.clone(), self.key_file.clone()];
        f.extend(self.client_ca_file.clone());
        f
    }

    /// A rustls configuration offering `alpn`; `at` names the setting in
    /// errors (`tls_server_config`, `--grpc.tls-*`).
    pub fn build(&self, alpn: &[&[u8]], at: &str) -> Result<rustls::ServerConfig, TlsError> {
        if self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty() {
            return Err(invalid(format!("{at}: cert_file and key_file are required")));
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.min_version.as_deref(), at)?)
            .map_err(|e| invalid(format!("{at}: {e}")))?;
        let auth = self.client_auth_type.as_deref();
        let builder = match (&self.client_ca_file, auth) {
            (None, None | Some("NoClientCert")) => builder.with_no_client_auth(),
            (Some(ca), None | Some("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven")) => {
                let roots = Arc::new(roots("client CA file", ca)?);
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier =
                    if auth == Some("VerifyClientCertIfGiven") { verifier.allow_unauthenticated() } else { verifier };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| invalid(format!("{at}.client_ca_file: {e}")))?,
                )
            }
            (None, Some(a @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven"))) => {
                return Err(invalid(format!("{at}: client_auth_type {a} needs client_ca_file")));
            }
            (Some(_), Some("NoClientCert")) => {
                return Err(invalid(format!(
                    "{at}: client_ca_file is set but client_auth_type is NoClientCert; \
                     use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                )));
            }
            (_, Some(a @ ("RequestClientCert" | "RequireAnyClientCert"))) => {
                return Err(invalid(format!(
                    "{at}: client_auth_type {a} accepts certificates nobody verified and is not supported; \
                     use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
                )));
            }
            (_, Some(a)) => {
                return Err(invalid(format!(
                    "{at}: client_auth_type {a:?} is not one of NoClientCert, VerifyClientCertIfGiven, \
                     RequireAndVerifyClientCert"
                )));
            }
        };
        let mut cfg = builder
            .with_single_cert(
                certificates("certificate file", &self.cert_file)?,
                private_key("key file", &self.key_file)?,
            )
            .map_err(|e| {
                invalid(format!(
                    "{at}: certificate {} and key {}: {e}",
                    self.cert_file.display(),
                    self.key_file.display()
                ))
            })?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// Whether connections must present a verified client certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca_file.is_some() && self.client_auth_type.as_deref() != Some("VerifyClientCertIfGiven")
    }
}

impl TlsClientConfig {
    /// The files it reads (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.ca_file, &self.cert_file, &self.key_file].into_iter().flatten().cloned().collect()
    }

    /// A rustls configuration offering `alpn`; `at` names the setting.
    pub fn build(&self, alpn: &[&[u8]], at: &str) -> Result<rustls::ClientConfig, TlsError> {
        if self.insecure_skip_verify {
            return Err(invalid(format!(
                "{at}.insecure_skip_verify is not supported: Strata always verifies the server; \
                 give ca_file with the CA that signed its certificate"
            )));
        }
        let roots = match &self.ca_file {
            Some(ca) => roots("CA file", ca)?,
            None => {
                let mut r = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = r.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err(invalid(format!(
                        "{at}: no ca_file and no usable system CA certificates ({} errors)",
                        native.errors.len()
                    )));
                }
                r
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.min_version.as_deref(), at)?)
            .map_err(|e| invalid(format!("{at}: {e}")))?
            .with_root_certificates(roots);
        let mut cfg = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(certificates("certificate file", c)?, private_key("key file", k)?)
                .map_err(|e| {
                    invalid(format!("{at}: client certificate {} and key {}: {e}", c.display(), k.display()))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(invalid(format!("{at}: cert_file and key_file go together"))),
        };
        if let Some(n) = &self.server_name {
            ServerName::try_from(n.clone()).map_err(|e| invalid(format!("{at}.server_name {n:?}: {e}")))?;
        }
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

/// Where a reloadable configuration comes from.
type Loader<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A listener's live TLS configuration, reloaded at run time.
pub struct ServerTls {
    load: Loader<rustls::ServerConfig>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    files: RwLock<Vec<PathBuf>>,
}

impl ServerTls {
    /// From a fixed configuration (the gRPC flags).
    pub fn new(
        cfg: TlsServerConfig,
        alpn: &'static [&'static [u8]],
        at: &'static str,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let files = cfg.files();
        ServerTls::from_loader(Box::new(move || cfg.build(alpn, at)), files)
    }

    /// From a loader that re-reads its source (the web config file) each
    /// time; `files` are watched.
    pub fn from_loader(load: Loader<rustls::ServerConfig>, files: Vec<PathBuf>) -> Result<Arc<ServerTls>, TlsError> {
        let first = load()?;
        Ok(Arc::new(ServerTls { load, current: RwLock::new(Arc::new(first)), files: RwLock::new(files) }))
    }

    /// The acceptor for a new connection (the configuration as of now).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self.current.read().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(cfg)
    }

    /// Re-reads the files; on an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = (self.load)()?;
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(fresh);
        }
        Ok(())
    }

    /// Reloads on SIGHUP and whenever one of its files changes (checked
    /// every `every`), while it is in use.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let files = self.files.read().map(|g| g.clone()).unwrap_or_default();
        let me = Arc::downgrade(self);
        crate::reload::watch_files(files, every, move || {
            let Some(me) = me.upgrade() else { return false };
            match me.reload() {
                Ok(()) => tracing::info!("TLS server certificates reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS server certificates not reloaded; the previous ones stay"),
            }
            true
        });
    }
}

/// A client's live TLS configuration, reloaded at run time.
pub struct ClientTls {
    cfg: TlsClientConfig,
    alpn: &'static [&'static [u8]],
    at: &'static str,
    current: RwLock<Arc<rustls::ClientConfig>>,
    /// Bumped by every successful reload (clients that cache a
    /// configuration rebuild when it moves).
    generation: std::sync::atomic::AtomicU64,
}

impl ClientTls {
    pub fn new(
        cfg: TlsClientConfig,
        alpn: &'static [&'static [u8]],
        at: &'static str,
    ) -> Result<Arc<ClientTls>, TlsError> {
        let first = cfg.build(alpn, at)?;
        Ok(Arc::new(ClientTls { cfg, alpn, at, current: RwLock::new(Arc::new(first)), generation: 0.into() }))
    }

    /// The rustls configuration as of now.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.current.read().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// How many times the configuration was reloaded.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The name to verify for `host` (the configured server name wins).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self
            .cfg
            .server_name
            .clone()
            .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']').to_string());
        ServerName::try_from(name.clone()).map_err(|e| invalid(format!("{}: server name {name:?}: {e}", self.at)))
    }

    /// Re-reads the files; on an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.cfg.build(self.alpn, self.at)?;
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(fresh);
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Reloads on SIGHUP and when one of its files changes.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        crate::reload::watch_files(self.cfg.files(), every, move || {
            let Some(me) = me.upgrade() else { return false };
            match me.reload() {
                Ok(()) => tracing::info!("TLS client certificates reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS client certificates not reloaded; the previous ones stay"),
            }
            true
        });
    }

    /// Connects `tcp` over TLS to `host`.
    pub async fn connect<IO>(&self, host: &str, tcp: IO) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self.server_name(host).map_err(std::io::Error::other)?;
        tokio_rustls::TlsConnector::from(self.config()).connect(name, tcp).await
    }
}

/// ALPN for HTTP/1.1 listeners and clients.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN for gRPC (HTTP/2) listeners and clients.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

#[cfg(test)]
pub(crate) mod test_certs {
    //! Certificates for tests: a CA and leaves it signs.
    use std::path::{Path, PathBuf};

    pub struct Ca {
        pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pub pem: String,
    }

    pub fn ca(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("self-signed");
        let pem = cert.pem();
        drop(cert);
        Ca { issuer: rcgen::Issuer::new(p, key), pem }
    }

    /// A leaf for `names` (DNS names or IP addresses) signed by `ca`,
    /// written as `<stem>.crt` / `<stem>.key` under `dir`.
    pub fn leaf(ca: &Ca, names: &[&str], dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = p.signed_by(&key, &ca.issuer).expect("sign");
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::*;
    use super::*;

    #[test]
    fn server_configs_are_checked_with_messages_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let ca1 = ca("ca1");
        let (c, k) = leaf(&ca1, &["127.0.0.1"], dir.path(), "srv");
        let (_, k2) = leaf(&ca1, &["127.0.0.1"], dir.path(), "other");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &ca1.pem).unwrap();
        let ok = TlsServerConfig { cert_file: c.clone(), key_file: k.clone(), ..Default::default() };
        ok.build(ALPN_H2, "t").unwrap();
        let mtls = TlsServerConfig { client_ca_file: Some(ca_file.clone()), ..ok.clone() };
        mtls.build(ALPN_H2, "t").unwrap();
        assert!(mtls.requires_client_certificates());
        let cases = [
            (TlsServerConfig { key_file: k2, ..ok.clone() }, "certificate"),
            (TlsServerConfig { cert_file: dir.path().join("missing.crt"), ..ok.clone() }, "missing.crt"),
            (TlsServerConfig { cert_file: k.clone(), ..ok.clone() }, "no PEM certificate"),
            (TlsServerConfig { key_file: c.clone(), ..ok.clone() }, "no PEM private key"),
            (
                TlsServerConfig { client_auth_type: Some("RequireAndVerifyClientCert".into()), ..ok.clone() },
                "needs client_ca_file",
            ),
            (TlsServerConfig { client_auth_type: Some("NoClientCert".into()), ..mtls.clone() }, "NoClientCert"),
            (
                TlsServerConfig { client_auth_type: Some("RequireAnyClientCert".into()), ..mtls.clone() },
                "not supported",
            ),
            (TlsServerConfig { client_auth_type: Some("Bogus".into()), ..mtls.clone() }, "not one of"),
            (TlsServerConfig { min_version: Some("TLS10".into()), ..ok.clone() }, "min_version"),
        ];
        for (cfg, want) in cases {
            let e = cfg.build(ALPN_H2, "tls_server_config").expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
        let e = TlsClientConfig { insecure_skip_verify: true, ..Default::default() }
            .build(ALPN_H2, "tls_config")
            .unwrap_err();
        assert!(e.to_string().contains("insecure_skip_verify"));
        let e = TlsClientConfig { ca_file: Some(ca_file), cert_file: Some(c), ..Default::default() }
            .build(ALPN_H2, "tls_config")
            .unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }

    /// Handshakes `client` against `server` on loopback; the server's
    /// error or the client's.
    async fn handshake(server: &Arc<ServerTls>, client: &ClientTls) -> Result<Vec<u8>, String> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = server.acceptor();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            match acceptor.accept(s).await {
                Ok(mut t) => {
                    use tokio::io::AsyncWriteExt;
                    let certs = t.get_ref().1.peer_certificates().map(|c| c.len()).unwrap_or(0);
                    let _ = t.write_all(format!("hello {certs}").as_bytes()).await;
                    let _ = t.shutdown().await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let got = async {
            use tokio::io::AsyncReadExt;
            let mut t = client.connect("127.0.0.1", tcp).await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            t.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        }
        .await;
        let s = srv.await.unwrap();
        match (got, s) {
            (Ok(b), Ok(())) => Ok(b),
            (_, Err(e)) => Err(format!("server: {e}")),
            (Err(e), Ok(())) => Err(format!("client: {e}")),
        }
    }

    #[tokio::test]
    async fn mutual_tls_needs_a_client_certificate_from_the_configured_ca_and_rotates_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ca("cluster");
        let rogue = ca("rogue");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &cluster.pem).unwrap();
        let (sc, sk) = leaf(&cluster, &["127.0.0.1"], dir.path(), "server");
        let (cc, ck) = leaf(&cluster, &["node-2"], dir.path(), "client");
        let (rc, rk) = leaf(&rogue, &["node-9"], dir.path(), "rogue");
        let server = ServerTls::new(
            TlsServerConfig {
                cert_file: sc.clone(),
                key_file: sk.clone(),
                client_ca_file: Some(ca_file.clone()),
                ..Default::default()
            },
            ALPN_H2,
            "--grpc.tls-*",
        )
        .unwrap();
        let member = ClientTls::new(
            TlsClientConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(cc),
                key_file: Some(ck),
                ..Default::default()
            },
            ALPN_H2,
            "t",
        )
        .unwrap();
        assert_eq!(handshake(&server, &member).await.unwrap(), b"hello 1");
        let anonymous =
            ClientTls::new(TlsClientConfig { ca_file: Some(ca_file.clone()), ..Default::default() }, ALPN_H2, "t")
                .unwrap();
        let e = handshake(&server, &anonymous).await.unwrap_err();
        assert!(e.starts_with("server:") && e.contains("certificate"), "{e}");
        let outsider = ClientTls::new(
            TlsClientConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(rc),
                key_file: Some(rk),
                ..Default::default()
            },
            ALPN_H2,
            "t",
        )
        .unwrap();
        let e = handshake(&server, &outsider).await.unwrap_err();
        assert!(e.starts_with("server:"), "{e}");
        // A client that does not trust the server's CA refuses it.
        let rogue_ca = dir.path().join("rogue-ca.crt");
        std::fs::write(&rogue_ca, &rogue.pem).unwrap();
        let wrong_trust =
            ClientTls::new(TlsClientConfig { ca_file: Some(rogue_ca), ..Default::default() }, ALPN_H2, "t").unwrap();
        assert!(handshake(&server, &wrong_trust).await.is_err());

        // Rotation: the server's certificate is re-issued by a new CA the
        // client is then told to trust; both reload, no restart.
        let next = ca("cluster-2");
        let (nc, nk) = leaf(&next, &["127.0.0.1"], dir.path(), "server-next");
        std::fs::copy(&nc, &sc).unwrap();
        std::fs::copy(&nk, &sk).unwrap();
        // Before the client reloads, it refuses the new certificate.
        server.reload().unwrap();
        assert!(handshake(&server, &member).await.is_err());
        std::fs::write(&ca_file, format!("{}{}", cluster.pem, next.pem)).unwrap();
        member.reload().unwrap();
        server.reload().unwrap();
        assert_eq!(handshake(&server, &member).await.unwrap(), b"hello 1");
        // A broken file keeps the previous configuration.
        std::fs::write(&sk, "not a key").unwrap();
        assert!(server.reload().is_err());
        assert_eq!(handshake(&server, &member).await.unwrap(), b"hello 1");
    }
}
