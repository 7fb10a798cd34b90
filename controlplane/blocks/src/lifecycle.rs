//! The end of a block's life: a `deletion-mark.json` next to its
//! `meta.json` hides it from every reader at once (`list_blocks` skips
//! marked blocks), and the files themselves are deleted only after a delay,
//! so a store gateway that has not re-listed the bucket yet can still finish
//! the reads it started (as in Thanos).

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::BlockError;

/// File name of the mark, inside the block's directory.
pub const DELETION_MARK: &str = "deletion-mark.json";

/// `<tenant>/<block_id>/deletion-mark.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionMark {
    pub id: String,
    pub tenant: String,
    /// When the block was marked, ms since the epoch.
    pub deletion_time: i64,
    /// Why: `compacted into <id>` or `retention`.
    pub reason: String,
    pub version: u32,
}

/// Hides a block from readers from now on; `delete_block` removes it later.
pub async fn mark_for_deletion(
    store: &dyn ObjectStore,
    tenant: &str,
    id: &str,
    now_ms: i64,
    reason: &str,
) -> Result<(), BlockError> {
    let mark = DeletionMark {
        id: id.to_string(),
        tenant: tenant.to_string(),
        deletion_time: now_ms,
        reason: reason.to_string(),
        version: 1,
    };
    let path = Path::from(format!("{tenant}/{id}/{DELETION_MARK}"));
    store.put(&path, PutPayload::from(serde_json::to_vec_pretty(&mark)?)).await?;
    Ok(())
}

/// Every deletion mark in the store.
pub async fn list_deletion_marks(store: &dyn ObjectStore) -> Result<Vec<DeletionMark>, BlockError> {
    let objects: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await?;
    let mut out = Vec::new();
    for o in objects.iter().filter(|o| o.location.filename() == Some(DELETION_MARK)) {
        let bytes = store.get(&o.location).await?.bytes().await?;
        out.push(serde_json::from_slice::<DeletionMark>(&bytes)?);
    }
    Ok(out)
}

/// Deletes a block's objects: `meta.json` first (so a half-deleted block
/// is never listed as a block), then the data files, the mark last (so an
/// interrupted deletion is finished by the next run).
pub async fn delete_block(store: &dyn ObjectStore, tenant: &str, id: &str) -> Result<(), BlockError> {
    let dir = Path::from(format!("{tenant}/{id}"));
    let objects: Vec<object_store::ObjectMeta> = store.list(Some(&dir)).try_collect().await?;
    let rank = |o: &object_store::ObjectMeta| match o.location.filename() {
        Some("meta.json") => 0,
        Some(DELETION_MARK) => 2,
        _ => 1,
    };
    let mut objects = objects;
    objects.sort_by_key(rank);
    for o in objects {
        match store.delete(&o.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SeriesData, list_blocks, upload_block};
    use object_store::memory::InMemory;
    use strata_model::Labels;

    fn one_series() -> Vec<SeriesData> {
        vec![SeriesData { labels: Labels::from_pairs(vec![("__name__".into(), "up".into())]), samples: vec![(0, 1.0)] }]
    }

    #[tokio::test]
    async fn a_marked_block_is_not_listed_and_deletion_removes_every_object() {
        let store = InMemory::new();
        let a = upload_block(&store, "t", "s", 0, 60_000, &one_series()).await.unwrap();
        let b = upload_block(&store, "t", "s", 60_000, 120_000, &one_series()).await.unwrap();
        mark_for_deletion(&store, "t", &a.ulid, 42, "retention").await.unwrap();
        let listed: Vec<String> = list_blocks(&store).await.unwrap().into_iter().map(|m| m.ulid).collect();
        assert_eq!(listed, vec![b.ulid.clone()]);
        let marks = list_deletion_marks(&store).await.unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(
            (marks[0].id.as_str(), marks[0].deletion_time, marks[0].reason.as_str()),
            (a.ulid.as_str(), 42, "retention")
        );

        delete_block(&store, "t", &a.ulid).await.unwrap();
        let left: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
        assert!(left.iter().all(|o| o.location.as_ref().contains(&b.ulid)), "{left:?}");
        assert_eq!(left.len(), 4, "b's four files stay");
        assert!(list_deletion_marks(&store).await.unwrap().is_empty());
        // Deleting again (an interrupted run finishing) is fine.
        delete_block(&store, "t", &a.ulid).await.unwrap();
    }
}
