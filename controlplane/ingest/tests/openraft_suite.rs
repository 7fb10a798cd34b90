//! openraft's own storage test suite (`openraft::testing::Suite`) run
//! against Strata's Raft log store and state machine: membership and
//! initial-state recovery from log + state machine, vote persistence, log
//! reads, purge and truncation, apply of blank and membership entries, and
//! snapshot build/transfer/install.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use strata_ingest::head::HeadConfig;
use strata_ingest::log_store::LogStore;
use strata_ingest::raft_types::{NodeId, TypeConfig};
use strata_ingest::state_machine::StateMachine;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft")).expect("open log store");
        let sm = StateMachine::open(dir.path().join("state"), HeadConfig::default(), "shard-0").expect("open state");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
