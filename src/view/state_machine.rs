//! The state machine: the current [`View`]. Snapshots are written durably to
//! `data_dir/snapshot.json`; after a restart the snapshot is loaded and openraft re-applies
//! the committed entries after it, so a member comes back with its view before any leader
//! exists.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fsutil::{read_optional, write_atomic};
use super::types::{LogId, StorageError, TypeConfig, View, ViewCommand, ViewReply};

type Membership = StoredMembership<u64, openraft::BasicNode>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// What a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId>,
    membership: Membership,
    view: View,
    /// The open group notices ([`ViewCommand::Notice`]); absent in snapshots made before
    /// notices existed.
    #[serde(default)]
    notices: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Inner {
    state: SmData,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
}

/// The view state machine. Clones share state. Every applied view is also published on a
/// watch channel (see [`ViewStateMachine::subscribe`]).
#[derive(Debug, Clone)]
pub struct ViewStateMachine {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
    views: watch::Sender<View>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl ViewStateMachine {
    /// Opens the state machine under `dir`, loading the last snapshot if one was written.
    pub fn open(dir: &Path) -> Result<ViewStateMachine, StorageError> {
        std::fs::create_dir_all(dir).map_err(sm_err)?;
        let path = dir.join("snapshot.json");
        let snapshot: Option<StoredSnapshot> = match read_optional(&path).map_err(sm_err)? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(sm_err)?),
            None => None,
        };
        let state = match &snapshot {
            Some(s) => serde_json::from_slice(&s.data).map_err(sm_err)?,
            None => SmData::default(),
        };
        let (views, _) = watch::channel(state.view.clone());
        Ok(ViewStateMachine {
            path,
            inner: Arc::new(Mutex::new(Inner {
                state,
                snapshot,
                snapshots_built: 0,
            })),
            views,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view as applied on this member.
    pub fn view(&self) -> View {
        self.lock().state.view.clone()
    }

    /// Every change of the applied view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.views.subscribe()
    }

    fn persist(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(snapshot).map_err(sm_err)?;
        write_atomic(&self.path, &bytes).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                AnyError::new(&e),
            ))
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ViewStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (state, n) = {
            let mut inner = self.lock();
            inner.snapshots_built += 1;
            (inner.state.clone(), inner.snapshots_built)
        };
        let data = serde_json::to_vec(&state).map_err(sm_err)?;
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}-{n}", id.leader_id, id.index),
            None => format!("empty-{n}"),
        };
        let meta = Meta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.persist(&stored)?;
        self.lock().snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ViewStateMachine {
    type SnapshotBuilder = ViewStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let inner = self.lock();
        Ok((inner.state.last_applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ViewReply>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut inner = self.lock();
        let before = inner.state.view.clone();
        for entry in entries {
            inner.state.last_applied = Some(entry.log_id);
            let accepted = match entry.payload {
                EntryPayload::Blank => true,
                EntryPayload::Membership(m) => {
                    inner.state.membership = StoredMembership::new(Some(entry.log_id), m);
                    true
                }
                EntryPayload::Normal(ViewCommand::Name {
                    epoch,
                    controller,
                    reason,
                    after,
                }) => {
                    let current = inner.state.view.epoch;
                    if after.unwrap_or(epoch.saturating_sub(1)) == current && epoch > current {
                        tracing::info!(epoch, controller = ?controller.as_ref().map(|c| &c.node), %reason, "view changed");
                        inner.state.view = View { epoch, controller };
                        true
                    } else {
                        false
                    }
                }
                EntryPayload::Normal(ViewCommand::Notice { key, open }) => {
                    if open {
                        inner.state.notices.insert(key)
                    } else {
                        inner.state.notices.remove(&key)
                    }
                }
            };
            replies.push(ViewReply {
                accepted,
                view: inner.state.view.clone(),
            });
        }
        let after = inner.state.view.clone();
        drop(inner);
        if after != before {
            self.views.send_replace(after);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: SmData = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist(&stored)?;
        let view = state.view.clone();
        {
            let mut inner = self.lock();
            inner.state = SmData {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                view: state.view,
                notices: state.notices,
            };
            inner.snapshot = Some(stored);
        }
        self.views.send_replace(view);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.lock().snapshot.clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
