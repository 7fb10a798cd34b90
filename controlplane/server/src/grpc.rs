//! gRPC transport for every Strata listener and client (Raft, forwarded
//! writes, StoreAPI, the agent's OTLP receiver), with or without TLS:
//!
//! - [`incoming`]: the connections a tonic server serves, TLS handshakes
//!   done concurrently (a slow or hostile client does not hold up the
//!   others) and bounded by a timeout;
//! - [`channel`]: a lazily connecting tonic channel, over TLS through
//!   rustls when a client configuration is given;
//! - [`GrpcServerTlsArgs`] / [`GrpcClientTlsArgs`]: the `--grpc.tls-*` and
//!   `--grpc-client.tls-*` flags.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::tls::{ALPN_H2, ClientTls, ServerTls, TlsClientConfig, TlsError, TlsServerConfig};

/// TLS for a gRPC listener, as flags (each settable from the config file).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GrpcServerTlsArgs {
    /// Certificate chain (PEM) the gRPC listener presents; with
    /// --grpc.tls-key-file the listener speaks TLS only. Re-read on SIGHUP
    /// and when it changes.
    #[arg(id = "grpc.tls-cert-file", long = "grpc.tls-cert-file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --grpc.tls-cert-file.
    #[arg(id = "grpc.tls-key-file", long = "grpc.tls-key-file")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) gRPC clients' certificates must chain to:
    /// every client (peers, queriers) must then present one (mutual TLS).
    #[arg(id = "grpc.tls-client-ca-file", long = "grpc.tls-client-ca-file")]
    pub client_ca_file: Option<PathBuf>,
}

impl GrpcServerTlsArgs {
    /// The listener's TLS configuration; `None` without a certificate.
    pub fn config(&self) -> Result<Option<TlsServerConfig>, String> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some(TlsServerConfig {
                cert_file: c.clone(),
                key_file: k.clone(),
                client_ca_file: self.client_ca_file.clone(),
                ..Default::default()
            })),
            (None, None) if self.client_ca_file.is_some() => {
                Err("--grpc.tls-client-ca-file needs --grpc.tls-cert-file and --grpc.tls-key-file".into())
            }
            (None, None) => Ok(None),
            _ => Err("--grpc.tls-cert-file and --grpc.tls-key-file go together".into()),
        }
    }

    /// The live configuration (reloaded when its files change), checked.
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let Some(cfg) = self.config().map_err(TlsError::Invalid)? else { return Ok(None) };
        let tls = ServerTls::new(cfg, ALPN_H2, "--grpc.tls-*")?;
        Ok(Some(tls))
    }
}

/// TLS for gRPC clients, as flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GrpcClientTlsArgs {
    /// Connect to gRPC servers (peers, stores, ingesters) over TLS, verified
    /// with the system's CA certificates unless --grpc-client.tls-ca-file
    /// is given (any other --grpc-client.tls-* flag implies it).
    #[arg(id = "grpc-client.tls-enabled", long = "grpc-client.tls-enabled")]
    pub enabled: bool,
    /// CA certificates (PEM) that verify gRPC servers.
    #[arg(id = "grpc-client.tls-ca-file", long = "grpc-client.tls-ca-file")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to gRPC servers that require one.
    #[arg(id = "grpc-client.tls-cert-file", long = "grpc-client.tls-cert-file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --grpc-client.tls-cert-file.
    #[arg(id = "grpc-client.tls-key-file", long = "grpc-client.tls-key-file")]
    pub key_file: Option<PathBuf>,
    /// Name gRPC servers' certificates must carry (default: the host of
    /// each address).
    #[arg(id = "grpc-client.tls-server-name", long = "grpc-client.tls-server-name")]
    pub server_name: Option<String>,
}

impl GrpcClientTlsArgs {
    /// The clients' TLS configuration; `None`: plaintext.
    pub fn config(&self) -> Option<TlsClientConfig> {
        let any = self.enabled
            || self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some();
        any.then(|| TlsClientConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
            ..Default::default()
        })
    }

    /// The live configuration (reloaded when its files change), checked.
    pub fn load(&self) -> Result<Option<Arc<ClientTls>>, TlsError> {
        let Some(cfg) = self.config() else { return Ok(None) };
        let tls = ClientTls::new(cfg, ALPN_H2, "--grpc-client.tls-*")?;
        tls.watch(Duration::from_secs(5));
        Ok(Some(tls))
    }
}

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

/// What a gRPC handler may learn about its caller's connection (in the
/// request's extensions).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub tcp: TcpConnectInfo,
    /// The caller presented a client certificate the listener verified
    /// against its `--grpc.tls-client-ca-file`: a cluster member or a
    /// querier.
    pub verified_client: bool,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        let tcp = TcpConnectInfo { local_addr: self.tcp().local_addr().ok(), remote_addr: self.tcp().peer_addr().ok() };
        let verified_client = match self {
            Conn::Plain(_) => false,
            // rustls only completes a handshake with a certificate it verified.
            Conn::Tls(s) => s.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
        };
        PeerInfo { tcp, verified_client }
    }
}

/// Whether the caller of `req` holds a client certificate from the
/// listener's client CA (always false on a plaintext listener).
pub fn verified_client<T>(req: &tonic::Request<T>) -> bool {
    req.extensions().get::<PeerInfo>().is_some_and(|p| p.verified_client)
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections accepted on `listener` for `Server::serve_with_incoming_shutdown`;
/// with `tls`, only those that completed a handshake (a failed handshake
/// is logged and its connection closed). The listener closes when the
/// stream is dropped (the server stopped accepting).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> impl futures::Stream<Item = Result<Conn, std::io::Error>> + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Conn>(64);
    if let Some(t) = &tls {
        t.watch(Duration::from_secs(5));
    }
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Conn::Plain(stream)).await.is_err() {
                        return;
                    }
                }
                Some(t) => {
                    let acceptor = t.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Conn::Tls(Box::new(s))).await;
                            }
                            Ok(Err(e)) => tracing::warn!(%peer, error = %e, "gRPC TLS handshake refused"),
                            Err(_) => tracing::warn!(%peer, "gRPC TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok)))
}

/// The URI of a gRPC server at `addr` (`host:port`, or a URL kept as is).
pub fn uri(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// A lazily connecting channel for `endpoint`, over TLS with `tls`;
/// `local` pins the connections' source address.
pub fn channel(endpoint: Endpoint, tls: Option<Arc<ClientTls>>, local: Option<IpAddr>) -> Channel {
    match tls {
        None => endpoint.local_address(local).connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector { tls, local }),
    }
}

/// Connects TCP (from `local` if set), then TLS with the host of the URI
/// as the server name.
#[derive(Clone)]
struct TlsConnector {
    tls: Arc<ClientTls>,
    local: Option<IpAddr>,
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let me = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?.to_string();
            let port = uri.port_u16().unwrap_or(443);
            let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let mut last = std::io::Error::other(format!("{host} resolves to no address"));
            for addr in tokio::net::lookup_host((bare.as_str(), port)).await? {
                match connect_tcp(addr, me.local).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        return Ok(TokioIo::new(me.tls.connect(&bare, tcp).await?));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

async fn connect_tcp(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}
