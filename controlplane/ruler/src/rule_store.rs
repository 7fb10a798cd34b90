//! Rule groups uploaded through the Cortex/Mimir ruler configuration API,
//! kept in object storage: one object per group at
//! `__rules__/<tenant>/<base64url(namespace)>/<base64url(group)>` holding
//! the group's YAML (as Cortex keys them, so any namespace or group name
//! is a valid object name). Every ruler replica reads the same objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::rule_file::GroupSpec;

#[derive(Debug, thiserror::Error)]
pub enum RuleStoreError {
    #[error("rule storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("rule storage object {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

/// One stored group.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGroup {
    pub tenant: String,
    pub namespace: String,
    pub spec: GroupSpec,
}

/// The uploaded rule groups of every tenant.
pub struct RuleStore {
    bucket: Arc<dyn ObjectStore>,
}

fn encode(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s.as_bytes())
}

fn decode(s: &str) -> Option<String> {
    URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| String::from_utf8(b).ok())
}

fn tenant_dir(tenant: &str) -> Path {
    Path::from(format!("{}/{tenant}", strata_model::tenant::RULES_DIR))
}

fn namespace_dir(tenant: &str, namespace: &str) -> Path {
    tenant_dir(tenant).join(encode(namespace))
}

fn group_path(tenant: &str, namespace: &str, group: &str) -> Path {
    namespace_dir(tenant, namespace).join(encode(group))
}

impl RuleStore {
    pub fn new(bucket: Arc<dyn ObjectStore>) -> RuleStore {
        RuleStore { bucket }
    }

    async fn read(&self, path: &Path) -> Result<Option<GroupSpec>, RuleStoreError> {
        let bytes = match self.bucket.get(path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_yaml::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuleStoreError::Corrupt { path: path.to_string(), reason: e.to_string() })
    }

    /// Stores (or replaces) one group of `tenant` in `namespace`.
    pub async fn put(&self, tenant: &str, namespace: &str, spec: &GroupSpec) -> Result<(), RuleStoreError> {
        let text = serde_yaml::to_string(spec).map_err(|e| RuleStoreError::Corrupt {
            path: group_path(tenant, namespace, &spec.name).to_string(),
            reason: e.to_string(),
        })?;
        self.bucket.put(&group_path(tenant, namespace, &spec.name), text.into_bytes().into()).await?;
        Ok(())
    }

    /// One group, `None` when it does not exist.
    pub async fn get(&self, tenant: &str, namespace: &str, group: &str) -> Result<Option<GroupSpec>, RuleStoreError> {
        self.read(&group_path(tenant, namespace, group)).await
    }

    /// Deletes one group; whether it existed.
    pub async fn delete_group(&self, tenant: &str, namespace: &str, group: &str) -> Result<bool, RuleStoreError> {
        let path = group_path(tenant, namespace, group);
        match self.bucket.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self.bucket.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every group of a namespace; how many there were.
    pub async fn delete_namespace(&self, tenant: &str, namespace: &str) -> Result<usize, RuleStoreError> {
        let objects: Vec<_> = self.bucket.list(Some(&namespace_dir(tenant, namespace))).try_collect().await?;
        for o in &objects {
            match self.bucket.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(objects.len())
    }

    /// The groups of `tenant` (every tenant with `None`), optionally of one
    /// namespace, by namespace then group name. An object that does not
    /// decode is an error naming it (the API says so; the evaluator skips it).
    pub async fn list(
        &self,
        tenant: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<Result<StoredGroup, RuleStoreError>>, RuleStoreError> {
        let prefix = match (tenant, namespace) {
            (Some(t), Some(ns)) => namespace_dir(t, ns),
            (Some(t), None) => tenant_dir(t),
            (None, _) => Path::from(strata_model::tenant::RULES_DIR),
        };
        let objects: Vec<_> = self.bucket.list(Some(&prefix)).try_collect().await?;
        let mut out: BTreeMap<(String, String, String), Result<StoredGroup, RuleStoreError>> = BTreeMap::new();
        for o in objects {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_string()).collect();
            let [_, tenant, ns, group] = parts.as_slice() else { continue };
            let corrupt =
                |reason: &str| RuleStoreError::Corrupt { path: o.location.to_string(), reason: reason.into() };
            let (Some(ns), Some(group)) = (decode(ns), decode(group)) else {
                out.insert((tenant.clone(), ns.clone(), group.clone()), Err(corrupt("name is not base64url")));
                continue;
            };
            let item = match self.read(&o.location).await {
                Ok(Some(spec)) if spec.name == group => {
                    Ok(StoredGroup { tenant: tenant.clone(), namespace: ns.clone(), spec })
                }
                Ok(Some(spec)) => Err(corrupt(&format!("holds group {:?}, not {group:?}", spec.name))),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            out.insert((tenant.clone(), ns, group), item);
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupSpec {
        serde_yaml::from_str(&format!("name: {name}\nrules:\n- record: r\n  expr: up\n")).unwrap()
    }

    #[tokio::test]
    async fn groups_are_kept_per_tenant_and_namespace() {
        let store = RuleStore::new(Arc::new(object_store::memory::InMemory::new()));
        store.put("a", "ns/with slash", &group("g1")).await.unwrap();
        store.put("a", "ns/with slash", &group("g 2")).await.unwrap();
        store.put("a", "other", &group("g1")).await.unwrap();
        store.put("b", "ns", &group("g1")).await.unwrap();
        let names = |v: Vec<Result<StoredGroup, RuleStoreError>>| -> Vec<(String, String, String)> {
            v.into_iter().map(|g| g.unwrap()).map(|g| (g.tenant, g.namespace, g.spec.name)).collect()
        };
        assert_eq!(
            names(store.list(Some("a"), None).await.unwrap()),
            vec![
                ("a".into(), "ns/with slash".into(), "g 2".into()),
                ("a".into(), "ns/with slash".into(), "g1".into()),
                ("a".into(), "other".into(), "g1".into()),
            ]
        );
        assert_eq!(names(store.list(Some("b"), None).await.unwrap()).len(), 1);
        assert_eq!(names(store.list(None, None).await.unwrap()).len(), 4);
        assert_eq!(store.get("a", "other", "g1").await.unwrap(), Some(group("g1")));
        assert_eq!(store.get("b", "other", "g1").await.unwrap(), None);
        assert!(store.delete_group("a", "other", "g1").await.unwrap());
        assert!(!store.delete_group("a", "other", "g1").await.unwrap());
        assert_eq!(store.delete_namespace("a", "ns/with slash").await.unwrap(), 2);
        assert!(store.list(Some("a"), None).await.unwrap().is_empty());
        assert_eq!(names(store.list(Some("b"), None).await.unwrap()).len(), 1);
    }
}
