//! Every object-storage request counted and timed
//! (`strata_objstore_operations_total{operation,result}`,
//! `strata_objstore_operation_duration_seconds{operation}`,
//! `strata_objstore_bytes_total{operation}`; see [`strata_telemetry`]):
//! a wrapper around the bucket [`crate::BucketConfig`] opens.
//!
//! Operations: `put`, `put_multipart` (start), `upload_part`,
//! `complete_multipart`, `abort_multipart`, `get` (until the response
//! head; bytes: the range returned), `get_range` (the ranges of one read),
//! `head`, `delete`, `list` (until the listing ends), `copy`, `rename`.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

fn record(operation: &'static str, ok: bool, elapsed: Duration, bytes: u64) {
    strata_telemetry::global().objstore(operation, ok, elapsed, bytes);
}

async fn timed<T>(
    operation: &'static str,
    bytes: impl FnOnce(&T) -> u64,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let r = fut.await;
    let n = r.as_ref().map(bytes).unwrap_or(0);
    record(operation, r.is_ok(), started.elapsed(), n);
    r
}

/// An [`ObjectStore`] whose requests are counted and timed.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> InstrumentedStore {
        InstrumentedStore { inner }
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// A listing or deletion stream: each error, and the end (or the drop of
/// an unfinished stream), recorded once.
struct TimedStream<S> {
    inner: S,
    operation: &'static str,
    started: Instant,
    /// Per item (deletes) rather than once for the whole stream (lists).
    per_item: bool,
    done: bool,
}

impl<S, T> Stream for TimedStream<S>
where
    S: Stream<Item = Result<T>> + Unpin,
{
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(r)) if self.per_item => {
                record(self.operation, r.is_ok(), self.started.elapsed(), 0);
                self.started = Instant::now();
            }
            Poll::Ready(Some(Err(_))) if !self.done => {
                self.done = true;
                record(self.operation, false, self.started.elapsed(), 0);
            }
            Poll::Ready(None) if !self.done && !self.per_item => {
                self.done = true;
                record(self.operation, true, self.started.elapsed(), 0);
            }
            _ => {}
        }
        polled
    }
}

impl<S> Drop for TimedStream<S> {
    fn drop(&mut self) {
        if !self.done && !self.per_item {
            // The reader stopped early: what it read was listed.
            record(self.operation, true, self.started.elapsed(), 0);
        }
    }
}

fn timed_stream<T: Send + 'static>(
    operation: &'static str,
    per_item: bool,
    inner: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    TimedStream { inner, operation, started: Instant::now(), per_item, done: false }.boxed()
}

#[derive(Debug)]
struct InstrumentedUpload {
    inner: Box<dyn MultipartUpload>,
}

#[async_trait::async_trait]
impl MultipartUpload for InstrumentedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let bytes = data.content_length() as u64;
        let part = self.inner.put_part(data);
        Box::pin(async move { timed("upload_part", |_| bytes, part).await })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        timed("complete_multipart", |_| 0, self.inner.complete()).await
    }

    async fn abort(&mut self) -> Result<()> {
        timed("abort_multipart", |_| 0, self.inner.abort()).await
    }
}

#[async_trait::async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let bytes = payload.content_length() as u64;
        timed("put", |_| bytes, self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let inner = timed("put_multipart", |_| 0, self.inner.put_multipart_opts(location, opts)).await?;
        Ok(Box::new(InstrumentedUpload { inner }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let operation = if options.head { "head" } else { "get" };
        let head = options.head;
        timed(operation, |r: &GetResult| if head { 0 } else { r.range.end - r.range.start }, async {
            self.inner.get_opts(location, options).await
        })
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed(
            "get_range",
            |r: &Vec<Bytes>| r.iter().map(|b| b.len() as u64).sum(),
            self.inner.get_ranges(location, ranges),
        )
        .await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        timed_stream("delete", true, self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream("list", false, self.inner.list(prefix))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream("list", false, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed("list", |_| 0, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed("copy", |_| 0, self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        timed("rename", |_| 0, self.inner.rename_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn requests_are_counted_by_operation_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let store = InstrumentedStore::new(Arc::new(fs));
        let t = strata_telemetry::global();
        let before = |op| (t.objstore_count(op, true), t.objstore_count(op, false));
        let (put, get, head, list, del) =
            (before("put"), before("get"), before("head"), before("list"), before("delete"));
        let p = Path::from("a/b.txt");
        store.put(&p, PutPayload::from_static(b"hello")).await.unwrap();
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"hello");
        assert!(store.get(&Path::from("a/missing")).await.is_err());
        store.head(&p).await.unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 1);
        store.delete(&p).await.unwrap();
        assert_eq!(before("put"), (put.0 + 1, put.1));
        assert_eq!(before("get"), (get.0 + 1, get.1 + 1));
        assert_eq!(before("head"), (head.0 + 1, head.1));
        assert_eq!(before("list"), (list.0 + 1, list.1));
        assert_eq!(before("delete").0, del.0 + 1);
        let mut out = String::new();
        strata_telemetry::encode(&mut out);
        assert!(out.contains(r#"strata_objstore_bytes_total{operation="put"} "#), "{out}");
    }
}
