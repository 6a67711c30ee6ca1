//! The Raft log and vote on disk.
//!
//! Layout under `data_dir`:
//!
//! ```text
//! vote.json            the current vote
//! committed.json       the last committed log id (lets a restart re-apply at once)
//! purged.json          the last purged log id
//! log/00000000000000000042.json   one file per entry, named by index
//! ```
//!
//! The view changes rarely (a few entries per failover), so one fsynced file per entry is
//! simple, inspectable and fast enough. Every write is durable (file and directory fsync)
//! before it is acknowledged to openraft. Entries are also kept in memory for reads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, OptionalSend, RaftLogReader, StorageIOError, Vote};

use super::fsutil::{read_optional, sync_dir, write_atomic, write_synced};
use super::types::{LogId, StorageError, TypeConfig};

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// The log store. Clones share the same state (the reader handed to openraft is a clone).
#[derive(Debug, Clone)]
pub struct FileLogStore {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

fn write_err(e: io::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn json<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(io::Error::other)
}

impl FileLogStore {
    /// Opens (creating when absent) the log under `dir`, reading what a previous run left.
    pub fn open(dir: &Path) -> Result<FileLogStore, StorageError> {
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).map_err(write_err)?;
        let mut inner = Inner::default();
        let load = |name: &str| -> Result<Option<Vec<u8>>, StorageError> {
            read_optional(&dir.join(name)).map_err(read_err)
        };
        if let Some(b) = load("vote.json")? {
            inner.vote = serde_json::from_slice(&b).map_err(read_err)?;
        }
        if let Some(b) = load("committed.json")? {
            inner.committed = serde_json::from_slice(&b).map_err(read_err)?;
        }
        if let Some(b) = load("purged.json")? {
            inner.purged = serde_json::from_slice(&b).map_err(read_err)?;
        }
        for item in fs::read_dir(&log_dir).map_err(read_err)? {
            let path = item.map_err(read_err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                // A leftover temporary file of an interrupted write.
                let _ = fs::remove_file(&path);
                continue;
            }
            let bytes = fs::read(&path).map_err(read_err)?;
            let entry: Entry<TypeConfig> = serde_json::from_slice(&bytes).map_err(read_err)?;
            inner.entries.insert(entry.log_id.index, entry);
        }
        // Entries at or below the purge point may survive a crash during purge.
        if let Some(p) = inner.purged {
            inner.entries.retain(|i, _| *i > p.index);
        }
        Ok(FileLogStore {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry_path(&self, index: u64) -> PathBuf {
        self.dir.join("log").join(format!("{index:020}.json"))
    }

    /// Whether this member has any Raft state at all (a vote or a log entry). A member with
    /// none has never been part of an initialized group.
    pub fn is_pristine(&self) -> bool {
        let inner = self.lock();
        inner.vote.is_none() && inner.entries.is_empty() && inner.purged.is_none()
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let inner = self.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = FileLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        write_atomic(&self.dir.join("vote.json"), &json(vote).map_err(write_err)?)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        write_atomic(
            &self.dir.join("committed.json"),
            &json(&committed).map_err(write_err)?,
        )
        .map_err(write_err)?;
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut written = Vec::new();
        let result = (|| -> io::Result<()> {
            for entry in entries {
                write_synced(&self.entry_path(entry.log_id.index), &json(&entry)?)?;
                written.push(entry);
            }
            sync_dir(&self.dir.join("log"))
        })();
        match result {
            Ok(()) => {
                let mut inner = self.lock();
                for entry in written {
                    inner.entries.insert(entry.log_id.index, entry);
                }
                drop(inner);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write_err(io::Error::new(e.kind(), e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let doomed: Vec<u64> = self
            .lock()
            .entries
            .range(log_id.index..)
            .map(|(i, _)| *i)
            .collect();
        // Remove from the end, so a crash midway leaves a contiguous log.
        for i in doomed.iter().rev() {
            match fs::remove_file(self.entry_path(*i)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        sync_dir(&self.dir.join("log")).map_err(write_err)?;
        let mut inner = self.lock();
        for i in doomed {
            inner.entries.remove(&i);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is recorded first: entries at or below it are ignored on open even if
        // their files outlive a crash.
        write_atomic(
            &self.dir.join("purged.json"),
            &json(&log_id).map_err(write_err)?,
        )
        .map_err(write_err)?;
        let doomed: Vec<u64> = self
            .lock()
            .entries
            .range(..=log_id.index)
            .map(|(i, _)| *i)
            .collect();
        for i in &doomed {
            match fs::remove_file(self.entry_path(*i)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        let mut inner = self.lock();
        inner.purged = Some(log_id);
        for i in doomed {
            inner.entries.remove(&i);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::super::state_machine::ViewStateMachine;
    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, FileLogStore, ViewStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, FileLogStore, ViewStateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = FileLogStore::open(dir.path())?;
            let sm = ViewStateMachine::open(dir.path())?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = FileLogStore::open(dir.path()).unwrap();
            assert!(log.is_pristine());
            log.save_vote(&Vote::new(3, 2)).await.unwrap();
            {
                let mut inner = log.lock();
                for i in 1..=5 {
                    inner.entries.insert(i, entry(3, i));
                }
            }
            for i in 1..=5 {
                write_synced(&log.entry_path(i), &json(&entry(3, i)).unwrap()).unwrap();
            }
            log.truncate(LogId::new(CommittedLeaderId::new(3, 1), 4))
                .await
                .unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(3, 1), 1))
                .await
                .unwrap();
        }
        let mut log = FileLogStore::open(dir.path()).unwrap();
        assert!(!log.is_pristine());
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let entries = log.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![2, 3]);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    }
}
