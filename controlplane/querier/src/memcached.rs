//! A memcached client for the results cache: the text protocol's `get` and
//! `set` (what every memcached, and memcached-compatible servers, speak),
//! keys spread over the servers by jump consistent hash, a few idle
//! connections kept per server, and a deadline on every operation so a
//! slow or unreachable memcached costs a query at most that long.
//!
//! Written here rather than taken from crates.io: the maintained async
//! client (`async-memcached`) pulls reqwest 0.11 and OpenSSL through its
//! test-proxy dependency (docs/architecture.md).

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Longest reply line read (`VALUE <key> <flags> <bytes> [<cas>]`).
const MAX_LINE: u64 = 512;
/// Idle connections kept per server.
const MAX_IDLE: usize = 16;
/// Memcached reads an expiry above 30 days as a Unix time.
const MAX_RELATIVE_EXPIRY: u64 = 30 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum MemcachedError {
    #[error("memcached {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("memcached {addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("memcached {addr}: unexpected reply {reply:?}")]
    Protocol { addr: String, reply: String },
}

struct Server {
    addr: String,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
}

/// Clients of a set of memcached servers.
pub struct Memcached {
    servers: Vec<Server>,
    timeout: Duration,
    /// Values larger than this are not read (a corrupt length cannot make
    /// us allocate more).
    max_value: usize,
}

/// Lamping and Veach's jump consistent hash: the bucket of `key` among `n`;
/// adding a server moves only 1/n of the keys.
fn jump_hash(mut key: u64, n: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

fn key_hash(key: &str) -> u64 {
    // FNV-1a: keys are already hashes, any mixing will do.
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Memcached {
    /// `addrs`: `host:port` of each server (at least one).
    pub fn new(addrs: &[String], timeout: Duration, max_value: usize) -> Memcached {
        let servers = addrs.iter().map(|a| Server { addr: a.clone(), idle: Mutex::new(Vec::new()) }).collect();
        Memcached { servers, timeout, max_value }
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[jump_hash(key_hash(key), self.servers.len())]
    }

    /// The value stored under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MemcachedError> {
        let server = self.server(key);
        let max_value = self.max_value;
        let key = key.to_string();
        self.with_connection(server, move |conn, addr| {
            Box::pin(async move {
                conn.write_all(format!("get {key}\r\n").as_bytes()).await?;
                conn.flush().await?;
                let line = read_line(conn).await?;
                if line == "END" {
                    return Ok(Ok(None));
                }
                let parts: Vec<&str> = line.split(' ').collect();
                let len = match parts.as_slice() {
                    ["VALUE", k, _flags, len, ..] if *k == key => len.parse::<usize>().ok(),
                    _ => None,
                };
                let Some(len) = len.filter(|&l| l <= max_value) else {
                    return Ok(Err(MemcachedError::Protocol { addr: addr.to_string(), reply: line }));
                };
                let mut value = vec![0u8; len + 2];
                conn.read_exact(&mut value).await?;
                if !value.ends_with(b"\r\n") {
                    return Ok(Err(MemcachedError::Protocol {
                        addr: addr.to_string(),
                        reply: "value without CRLF".into(),
                    }));
                }
                value.truncate(len);
                let end = read_line(conn).await?;
                if end != "END" {
                    return Ok(Err(MemcachedError::Protocol { addr: addr.to_string(), reply: end }));
                }
                Ok(Ok(Some(value)))
            })
        })
        .await
    }

    /// Stores `value` under `key` for `ttl`. `Ok(false)`: the server
    /// refused it (too large for its item size).
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, MemcachedError> {
        let server = self.server(key);
        let expiry = ttl.as_secs().clamp(1, MAX_RELATIVE_EXPIRY);
        let mut request = format!("set {key} 0 {expiry} {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        self.with_connection(server, move |conn, addr| {
            Box::pin(async move {
                conn.write_all(&request).await?;
                conn.flush().await?;
                let line = read_line(conn).await?;
                Ok(match line.as_str() {
                    "STORED" => Ok(true),
                    l if l.starts_with("SERVER_ERROR object too large") => Ok(false),
                    _ => Err(MemcachedError::Protocol { addr: addr.to_string(), reply: line }),
                })
            })
        })
        .await
    }

    /// Runs `op` on an idle connection to `server` (or a new one) within
    /// the timeout; the connection is kept for reuse only after a clean
    /// exchange.
    async fn with_connection<T, F>(&self, server: &Server, op: F) -> Result<T, MemcachedError>
    where
        F: for<'c> FnOnce(
            &'c mut BufStream<TcpStream>,
            &'c str,
        ) -> futures::future::BoxFuture<'c, std::io::Result<Result<T, MemcachedError>>>,
    {
        let addr = server.addr.as_str();
        let io_err = |source| MemcachedError::Io { addr: addr.to_string(), source };
        let timed_out = || MemcachedError::Timeout { addr: addr.to_string(), timeout: self.timeout };
        let work = async {
            let idle = server.idle.lock().ok().and_then(|mut g| g.pop());
            let mut conn = match idle {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect(addr).await.map_err(io_err)?;
                    let _ = s.set_nodelay(true);
                    BufStream::new(s)
                }
            };
            let r = op(&mut conn, addr).await.map_err(io_err)?;
            if r.is_ok()
                && let Ok(mut g) = server.idle.lock()
                && g.len() < MAX_IDLE
            {
                g.push(conn);
            }
            r
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| timed_out())?
    }
}

/// One reply line without its CRLF, at most [`MAX_LINE`] bytes.
async fn read_line(conn: &mut BufStream<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = (&mut *conn).take(MAX_LINE).read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    if !line.ends_with("\r\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "reply line too long or cut"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_spreads_and_moves_few_keys() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| key_hash(&format!("k{i}"))).collect();
        let mut counts = [0usize; 4];
        for &k in &keys {
            counts[jump_hash(k, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 2000 && c < 3000), "{counts:?}");
        let moved = keys.iter().filter(|&&k| jump_hash(k, 4) != jump_hash(k, 5)).count();
        assert!(moved < 2600, "adding a fifth server moved {moved} of 10000 keys");
        assert!(keys.iter().all(|&k| jump_hash(k, 1) == 0));
    }

    /// A fake server speaking a few canned replies: the client refuses
    /// oversize lengths and stray replies instead of trusting them.
    async fn one_reply(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    #[tokio::test]
    async fn refuses_bad_replies() {
        let addr = one_reply(b"VALUE k 0 999999999\r\n").await;
        let mc = Memcached::new(&[addr], Duration::from_secs(2), 1 << 20);
        assert!(matches!(mc.get("k").await, Err(MemcachedError::Protocol { .. })));
        let addr = one_reply(b"SERVER_ERROR out of memory\r\n").await;
        let mc = Memcached::new(&[addr], Duration::from_secs(2), 1 << 20);
        assert!(matches!(mc.set("k", b"v", Duration::from_secs(60)).await, Err(MemcachedError::Protocol { .. })));
        // A server that accepts and never answers costs the timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mc = Memcached::new(&[listener.local_addr().unwrap().to_string()], Duration::from_millis(200), 1 << 20);
        let started = std::time::Instant::now();
        assert!(matches!(mc.get("k").await, Err(MemcachedError::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
