//! Logs archived to object storage (issue 18, `--log-archive URL`): once a try has ended, its
//! whole log goes to one object, and its chunks leave the database after the upload is
//! confirmed. Readers (`TailLogs`: goflowctl logs, the web UI's view and download) read the
//! object for the bytes it holds and the database for the rest, so nobody sees a difference.
//!
//! `object_store` serves S3 (and S3-compatible stores: MinIO, moto) and local files behind one
//! interface. Credentials, region and endpoint come from the standard `AWS_*` environment
//! (`AWS_ENDPOINT_URL` for a store other than AWS); an `http://` endpoint on loopback is allowed
//! without `AWS_ALLOW_HTTP`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// Where archived logs go.
#[derive(Clone)]
pub struct LogArchive {
    /// As configured, for messages.
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The folder inside the store that objects are written under (empty: its root).
    prefix: String,
}

impl std::fmt::Debug for LogArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogArchive").field("url", &self.url).finish()
    }
}

impl LogArchive {
    /// Reads `url` (`s3://bucket/prefix` or `file:///dir`) with S3 settings from `env`
    /// (the process's environment in production). Does no I/O but creating a missing
    /// `file://` folder; [`Self::check`] proves the store works.
    pub fn open(url: &str, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("--log-archive {url:?} is not a URL: use s3://BUCKET/PREFIX or file:///DIR")
        })?;
        match scheme {
            "s3" => {
                // object_store's HTTP client is reqwest over rustls, with the process's provider.
                crate::tls::install_crypto_provider();
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("--log-archive {url:?} names no bucket: use s3://BUCKET/PREFIX");
                }
                // Client options first: setting them later would replace what the
                // environment and the loopback rule below set (allow_http is one of them).
                let mut builder = AmazonS3Builder::new().with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(120)),
                );
                for (key, value) in env {
                    if key.starts_with("AWS_")
                        && let Ok(config) = key.to_ascii_lowercase().parse()
                    {
                        builder = builder.with_config(config, value);
                    }
                }
                let endpoint = env
                    .get("AWS_ENDPOINT_URL_S3")
                    .or_else(|| env.get("AWS_ENDPOINT_URL"))
                    .or_else(|| env.get("AWS_ENDPOINT"));
                if endpoint.is_some_and(|e| is_loopback_http(e)) {
                    builder = builder.with_allow_http(true);
                }
                if !env.contains_key("AWS_REGION") {
                    let region = env.get("AWS_DEFAULT_REGION").map_or("us-east-1", String::as_str);
                    builder = builder.with_region(region);
                }
                let store = builder
                    .with_bucket_name(bucket)
                    .with_retry(retry())
                    .build()
                    .with_context(|| format!("--log-archive {url}: cannot use this S3 bucket"))?;
                Ok(Self {
                    url: url.to_string(),
                    store: Arc::new(store),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
            "file" => {
                let dir = std::path::Path::new(rest);
                if !dir.is_absolute() {
                    bail!(
                        "--log-archive {url:?}: a file URL needs an absolute folder, e.g. file:///srv/goflow-logs"
                    );
                }
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("--log-archive {url}: cannot create folder {}", dir.display())
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("--log-archive {url}: cannot use folder {}", dir.display()))?;
                Ok(Self {
                    url: url.to_string(),
                    store: Arc::new(store),
                    prefix: String::new(),
                })
            }
            other => bail!(
                "--log-archive {url:?}: {other}:// is not supported; use s3://BUCKET/PREFIX (AWS S3, MinIO \
                 and other S3-compatible stores) or file:///DIR (a shared disk)"
            ),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes, reads back and deletes a small object, so a bucket that is missing, unreachable
    /// or not writable with these credentials is named at start-up, not at the first upload.
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = self.path(&format!(".goflow-probe-{}", std::process::id()));
        let fail = |e: object_store::Error| {
            anyhow::anyhow!(
                "--log-archive {}: the store does not work: {e} (check the bucket, AWS_ENDPOINT_URL and the \
                 AWS_* credentials)",
                self.url
            )
        };
        self.store
            .put(&probe, PutPayload::from_static(b"goflow"))
            .await
            .map_err(fail)?;
        self.store
            .get(&probe)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)?;
        self.store.delete(&probe).await.map_err(fail)?;
        Ok(())
    }

    /// The object a try's log goes to.
    pub fn object_for(&self, task: &str, etl_day: &str, attempt_id: &str) -> String {
        self.path(&format!("{task}/{etl_day}/{attempt_id}.log"))
            .to_string()
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Stores `data` as `object`, whole: returns once the store confirmed it.
    pub async fn put(&self, object: &str, data: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(&ObjectPath::from(object), PutPayload::from(data))
            .await
            .with_context(|| format!("cannot upload {object} to {}", self.url))?;
        Ok(())
    }

    /// Bytes `range` of `object`.
    pub async fn read(&self, object: &str, range: Range<u64>) -> anyhow::Result<Vec<u8>> {
        if range.is_empty() {
            return Ok(vec![]);
        }
        let bytes = self
            .store
            .get_range(&ObjectPath::from(object), range)
            .await
            .with_context(|| format!("cannot read {object} from {}", self.url))?;
        Ok(bytes.to_vec())
    }

    /// Deletes `object`; one already gone is fine.
    pub async fn delete(&self, object: &str) -> anyhow::Result<()> {
        match self.store.delete(&ObjectPath::from(object)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {object} from {}", self.url)),
        }
    }
}

/// A few quick retries inside one call; the archiver retries failed uploads itself, with
/// backoff, so a store that is down is not waited on for minutes per request.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
    }
}

/// `http://127.0.0.1:9000`, `http://localhost:9000`, `http://[::1]:9000`.
fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.trim().strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_endpoints_are_recognised() {
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:5000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("https://127.0.0.1:9000"));
        assert!(!is_loopback_http("http://minio.internal:9000"));
        assert!(!is_loopback_http("http://10.0.0.1:9000"));
    }

    #[test]
    fn bad_urls_are_named() {
        let env = HashMap::new();
        let err = |url: &str| LogArchive::open(url, &env).unwrap_err().to_string();
        assert!(err("logs").contains("is not a URL"), "{}", err("logs"));
        assert!(err("gs://bucket/x").contains("gs:// is not supported"));
        assert!(err("s3:///prefix").contains("names no bucket"));
        assert!(err("file://relative/dir").contains("absolute folder"));
    }

    #[tokio::test]
    async fn a_file_archive_stores_reads_ranges_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/logs", dir.path().display());
        let archive = LogArchive::open(&url, &HashMap::new()).unwrap();
        archive.check().await.unwrap();
        let object = archive.object_for("load", "20260101", "7-1");
        assert_eq!(object, "load/20260101/7-1.log");
        archive.put(&object, b"hello\nworld\n".to_vec()).await.unwrap();
        assert_eq!(archive.read(&object, 6..12).await.unwrap(), b"world\n");
        assert_eq!(
            std::fs::read(dir.path().join("logs/load/20260101/7-1.log")).unwrap(),
            b"hello\nworld\n"
        );
        archive.delete(&object).await.unwrap();
        archive.delete(&object).await.unwrap();
        assert!(archive.read(&object, 0..1).await.is_err());
    }

    #[test]
    fn s3_objects_go_under_the_prefix() {
        let env = HashMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), "k".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string()),
            ("AWS_ENDPOINT_URL".to_string(), "http://127.0.0.1:1".to_string()),
        ]);
        let archive = LogArchive::open("s3://bucket/goflow/logs/", &env).unwrap();
        assert_eq!(
            archive.object_for("a", "20260101", "1-1"),
            "goflow/logs/a/20260101/1-1.log"
        );
    }
}
