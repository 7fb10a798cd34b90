//! The label sets of the gateway's blocks as the query engine takes them,
//! each distinct set held once and shared by every block holding it.
//!
//! A 30-day panel reads each series from some 45 blocks (hourly days,
//! 5-minute days, raw blocks). Cloning its labels for each of them, hashing
//! and comparing them to merge a series' blocks, and freeing them again was
//! about a fifth of the gateway's time on such a query; with one shared
//! set, a block's series carries a pointer and blocks are merged by it.

use std::collections::HashSet;
use std::sync::Arc;

use strata_blocks::BlockIndex;
use strata_promql::Labels;

/// The engine's labels of each of a block's series, by `series_ref`.
pub type BlockLabels = Arc<[Arc<Labels>]>;

/// Every label set of the loaded blocks, once.
#[derive(Default)]
pub struct LabelTable {
    sets: HashSet<Arc<Labels>, foldhash::fast::RandomState>,
}

impl LabelTable {
    /// The labels of each of `b`'s series, each the same `Arc` as the
    /// same set of any other block interned here.
    pub fn intern(&mut self, b: &BlockIndex) -> BlockLabels {
        b.labels
            .iter()
            .map(|l| {
                let labels = Labels(l.iter().map(|(n, v)| (n.into(), v.into())).collect());
                match self.sets.get(&labels) {
                    Some(held) => held.clone(),
                    None => {
                        let held = Arc::new(labels);
                        self.sets.insert(held.clone());
                        held
                    }
                }
            })
            .collect()
    }

    /// Forgets the sets nothing else holds any more (no loaded block, no
    /// query under way).
    pub fn forget_unused(&mut self) {
        self.sets.retain(|l| Arc::strong_count(l) > 1);
    }

    /// Distinct label sets held.
    pub fn len(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStore;
    use object_store::local::LocalFileSystem;
    use strata_blocks::SeriesData;

    async fn block(store: &dyn ObjectStore, min_t: i64, series: &[&[(&str, &str)]]) -> BlockIndex {
        let data: Vec<SeriesData> = series
            .iter()
            .map(|l| SeriesData {
                labels: strata_model::Labels::from_pairs(
                    l.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                ),
                samples: vec![(min_t, 1.0)],
            })
            .collect();
        let meta = strata_blocks::upload_block(store, "anonymous", "s", min_t, min_t + 1000, &data).await.unwrap();
        BlockIndex::load(store, meta).await.unwrap()
    }

    #[tokio::test]
    async fn blocks_share_one_label_set_per_series_until_none_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let (a, b, c) = (
            block(&store, 0, &[&[("__name__", "up"), ("job", "a")], &[("__name__", "up"), ("job", "b")]]).await,
            block(&store, 1000, &[&[("__name__", "up"), ("job", "b")], &[("__name__", "up"), ("job", "c")]]).await,
            block(&store, 2000, &[&[("__name__", "up"), ("job", "c")]]).await,
        );
        let mut table = LabelTable::default();
        let (a, b) = (table.intern(&a), table.intern(&b));
        assert_eq!(table.len(), 3);
        assert_eq!(a[1].get("job"), Some("b"));
        assert!(Arc::ptr_eq(&a[1], &b[0]), "the same set in two blocks is one Arc");
        assert!(!Arc::ptr_eq(&a[0], &b[1]));

        drop(a);
        table.forget_unused();
        assert_eq!(table.len(), 2, "job=a was held by the dropped block alone");
        let c = table.intern(&c);
        assert!(Arc::ptr_eq(&b[1], &c[0]));
        drop((b, c));
        table.forget_unused();
        assert_eq!(table.len(), 0);
    }
}
