//! Certificates for TLS tests, generated per test (rcgen): a cluster CA
//! with a member certificate for 127.0.0.1 (served by every node and
//! presented as its client certificate), and a rogue CA with a rogue
//! certificate that no member trusts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM certificate and its key, on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    /// The cluster CA's certificate.
    pub ca: PathBuf,
    /// Signed by the cluster CA, for 127.0.0.1 and `localhost`.
    pub member: CertFiles,
    /// The rogue CA's certificate.
    pub rogue_ca: PathBuf,
    /// Signed by the rogue CA, for 127.0.0.1 and `localhost`.
    pub rogue: CertFiles,
}

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key).expect("self-signed CA").pem();
    Ca { issuer: rcgen::Issuer::new(p, key), pem }
}

fn leaf(ca: &Ca, dir: &Path, stem: &str) -> CertFiles {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, stem);
    let cert = p.signed_by(&key, &ca.issuer).expect("sign");
    let files = CertFiles { cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) };
    std::fs::write(&files.cert, cert.pem()).expect("write certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

impl Pki {
    /// Generates everything under `dir/pki`.
    pub fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let cluster = ca("strata-test-cluster");
        let rogue = ca("strata-test-rogue");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, &cluster.pem).expect("write CA");
        let rogue_ca = dir.join("rogue-ca.crt");
        std::fs::write(&rogue_ca, &rogue.pem).expect("write rogue CA");
        Pki { ca: ca_path, member: leaf(&cluster, &dir, "member"), rogue_ca, rogue: leaf(&rogue, &dir, "rogue") }
    }

    /// Ingester/store flags: the gRPC listener serves the member
    /// certificate and requires client certificates from the cluster CA;
    /// connections to peers present the member certificate.
    pub fn peer_flags(&self) -> Vec<String> {
        let (c, k, ca) = (self.member.cert.display(), self.member.key.display(), self.ca.display());
        vec![
            format!("--grpc.tls-cert-file={c}"),
            format!("--grpc.tls-key-file={k}"),
            format!("--grpc.tls-client-ca-file={ca}"),
            format!("--grpc-client.tls-ca-file={ca}"),
            format!("--grpc-client.tls-cert-file={c}"),
            format!("--grpc-client.tls-key-file={k}"),
        ]
    }

    /// Querier flags: connections to ingesters and stores present the
    /// member certificate.
    pub fn client_flags(&self) -> Vec<String> {
        let (c, k, ca) = (self.member.cert.display(), self.member.key.display(), self.ca.display());
        vec![
            format!("--grpc-client.tls-ca-file={ca}"),
            format!("--grpc-client.tls-cert-file={c}"),
            format!("--grpc-client.tls-key-file={k}"),
        ]
    }

    /// A gRPC client TLS configuration trusting `trust` and presenting
    /// `identity`.
    pub fn grpc_client(trust: &Path, identity: Option<&CertFiles>) -> Arc<strata_server::tls::ClientTls> {
        strata_server::tls::ClientTls::new(
            strata_server::tls::TlsClientConfig {
                ca_file: Some(trust.to_path_buf()),
                cert_file: identity.map(|i| i.cert.clone()),
                key_file: identity.map(|i| i.key.clone()),
                ..Default::default()
            },
            strata_server::tls::ALPN_H2,
            "test",
        )
        .expect("client TLS")
    }

    /// An HTTPS client trusting `trust` and presenting `identity`.
    pub fn https_client(trust: &Path, identity: Option<&CertFiles>) -> reqwest_rustls::Client {
        let tls = strata_server::tls::TlsClientConfig {
            ca_file: Some(trust.to_path_buf()),
            cert_file: identity.map(|i| i.cert.clone()),
            key_file: identity.map(|i| i.key.clone()),
            ..Default::default()
        }
        .build(strata_server::tls::ALPN_HTTP1, "test")
        .expect("client TLS");
        reqwest_rustls::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("HTTPS client")
    }
}

/// A TLS-terminating proxy on loopback in front of a plaintext `upstream`
/// (`host:port`), serving `cert` (an S3 server behind HTTPS with a
/// private CA). Runs until the test's runtime ends; returns its port.
pub async fn tls_proxy(upstream: String, cert: &CertFiles) -> u16 {
    let tls = strata_server::tls::ServerTls::new(
        strata_server::tls::TlsServerConfig {
            cert_file: cert.cert.clone(),
            key_file: cert.key.clone(),
            ..Default::default()
        },
        strata_server::tls::ALPN_HTTP1,
        "proxy",
    )
    .expect("proxy TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let acceptor = tls.acceptor();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut inbound) = acceptor.accept(inbound).await else { return };
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    port
}
