//! Where blocks live: a local directory (the laptop default) or an
//! S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …). Both ingesters (which
//! upload) and store gateways (which read) open the bucket from the same
//! configuration, so the two always agree on object names.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;

use crate::instrumented::InstrumentedStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::BlockError;

/// Object storage configuration (`--objstore.*` flags).
#[derive(Debug, Clone, PartialEq)]
pub enum BucketConfig {
    /// A local directory, created if missing.
    Filesystem { path: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Config),
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig::Filesystem { path: PathBuf::from("./data/objstore") }
    }
}

/// An S3-compatible bucket. Credentials not given here come from the usual
/// `AWS_*` environment variables (and, on AWS, the instance/pod role).
#[derive(Clone, Default, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://minio:9000`; empty for AWS S3 itself. An `http://`
    /// endpoint turns off TLS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Every object name is put under this prefix (several clusters can
    /// share one bucket).
    pub prefix: String,
    /// `bucket.endpoint/key` addressing instead of `endpoint/bucket/key`
    /// (AWS prefers it; MinIO and most self-hosted servers need path style).
    pub virtual_hosted_style: bool,
    /// PEM CA certificates that verify an `https://` endpoint (a private
    /// CA); without it the system's CA certificates do.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Debug output names whether credentials are set, never their values.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.as_deref().is_some_and(|s| !s.is_empty()) { "<set>" } else { "<unset>" };
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .field("prefix", &self.prefix)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl BucketConfig {
    /// A short description for logs (never includes credentials).
    pub fn describe(&self) -> String {
        match self {
            BucketConfig::Filesystem { path } => format!("file://{}", path.display()),
            BucketConfig::S3(s3) => {
                let endpoint = s3.endpoint.as_deref().unwrap_or("aws");
                let prefix = s3.prefix.trim_matches('/');
                if prefix.is_empty() {
                    format!("s3://{} ({endpoint})", s3.bucket)
                } else {
                    format!("s3://{}/{prefix} ({endpoint})", s3.bucket)
                }
            }
        }
    }

    /// Opens the bucket. This checks the configuration only; an unreachable
    /// server shows up on the first request (and is retried by the callers).
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, BlockError> {
        let (root, prefix) = self.open_root()?;
        if prefix.is_empty() { Ok(root) } else { Ok(Arc::new(PrefixStore::new(root, prefix.as_str()))) }
    }

    /// The bucket without the prefix applied, and the prefix (object names
    /// are `<prefix>/<name>`). For readers that must see real object names:
    /// object_store 0.13's `PrefixStore` returns `head()` locations with the
    /// prefix still on, which DataFusion's file listing then rejects.
    pub fn open_root(&self) -> Result<(Arc<dyn ObjectStore>, String), BlockError> {
        match self {
            BucketConfig::Filesystem { path } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| BlockError::Config(format!("object store directory {}: {e}", path.display())))?;
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| BlockError::Config(format!("object store directory {}: {e}", path.display())))?
                    // Deleted blocks leave no empty directories behind.
                    .with_automatic_cleanup(true);
                Ok((Arc::new(InstrumentedStore::new(Arc::new(fs))), String::new()))
            }
            BucketConfig::S3(s3) => {
                if s3.bucket.is_empty() {
                    return Err(BlockError::Config("--objstore.s3.bucket is required with --objstore.type=s3".into()));
                }
                // Callers retry on their own schedule (the ingester keeps a
                // cut block in memory until its upload succeeds; the store
                // syncs again), so a request fails within seconds instead of
                // object_store's default of retrying for three minutes.
                let retry =
                    RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() };
                let mut client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
                if let Some(ca) = &s3.ca_file {
                    let pem = std::fs::read(ca)
                        .map_err(|e| BlockError::Config(format!("--objstore.s3.ca-file {}: {e}", ca.display())))?;
                    let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        BlockError::Config(format!("--objstore.s3.ca-file {}: not PEM certificates: {e}", ca.display()))
                    })?;
                    if certs.is_empty() {
                        return Err(BlockError::Config(format!(
                            "--objstore.s3.ca-file {}: no certificate in it",
                            ca.display()
                        )));
                    }
                    for c in certs {
                        client = client.with_root_certificate(c);
                    }
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style);
                if !s3.region.is_empty() {
                    b = b.with_region(&s3.region);
                }
                if let Some(endpoint) = s3.endpoint.as_deref().filter(|e| !e.is_empty()) {
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                        return Err(BlockError::Config(format!(
                            "--objstore.s3.endpoint {endpoint:?} must start with http:// or https://"
                        )));
                    }
                    b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(key) = s3.access_key_id.as_deref().filter(|k| !k.is_empty()) {
                    b = b.with_access_key_id(key);
                }
                if let Some(secret) = s3.secret_access_key.as_deref().filter(|k| !k.is_empty()) {
                    b = b.with_secret_access_key(secret);
                }
                let store = b.build().map_err(|e| BlockError::Config(format!("S3 bucket {:?}: {e}", s3.bucket)))?;
                Ok((Arc::new(InstrumentedStore::new(Arc::new(store))), s3.prefix.trim_matches('/').to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_bucket_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        let cfg = BucketConfig::Filesystem { path: path.clone() };
        cfg.open().unwrap();
        assert!(path.is_dir());
        assert_eq!(cfg.describe(), format!("file://{}", path.display()));
    }

    #[test]
    fn s3_config_errors_name_the_flag() {
        let err = BucketConfig::S3(S3Config::default()).open().err().unwrap().to_string();
        assert!(err.contains("--objstore.s3.bucket"), "{err}");
        let cfg = BucketConfig::S3(S3Config {
            bucket: "b".into(),
            endpoint: Some("minio:9000".into()),
            ..Default::default()
        });
        let err = cfg.open().err().unwrap().to_string();
        assert!(err.contains("--objstore.s3.endpoint"), "{err}");
    }

    #[test]
    fn s3_description_hides_credentials() {
        let cfg = BucketConfig::S3(S3Config {
            bucket: "blocks".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("secret".into()),
            prefix: "/prod/".into(),
            virtual_hosted_style: false,
            ca_file: None,
        });
        assert!(cfg.open().is_ok());
        let d = cfg.describe();
        assert_eq!(d, "s3://blocks/prod (http://127.0.0.1:9000)");
        assert!(!d.contains("secret") && !d.contains("AKIA"));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("\"secret\"") && !debug.contains("AKIA") && debug.contains("<set>"), "{debug}");
    }
}
