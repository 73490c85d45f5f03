//! The `storage` imports of the planner component: a thin adapter from the
//! WIT calls to [`Storage`], which confines every name to the WAL directory
//! and every key to the archive prefix.

use std::sync::Arc;

use crate::bindings::{nodedb, wit};
use crate::storage::Storage;

/// What a planner session may reach: nothing, or the storage of one archiver.
#[derive(Default)]
pub struct Imports {
    storage: Option<Arc<Storage>>,
}

impl Imports {
    pub fn new(storage: Option<Arc<Storage>>) -> Self {
        Self { storage }
    }

    fn storage(&self) -> Result<&Storage, wit::StorageError> {
        self.storage.as_deref().ok_or_else(|| wit::StorageError::Refused("this session has no storage".into()))
    }
}

impl wit::Host for Imports {}

impl nodedb::wal_archiver::storage::Host for Imports {
    fn list_wal_dir(&mut self) -> Result<wit::DirListing, wit::StorageError> {
        Ok(self.storage()?.wal.list()?)
    }

    fn list_archive(&mut self) -> Result<wit::ArchiveListing, wit::StorageError> {
        let s = self.storage()?;
        Ok(s.runtime.block_on(s.list_archive())?)
    }

    fn upload(&mut self, name: String, key: String, size: u64, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        let s = self.storage()?;
        Ok(s.runtime.block_on(s.upload_segment(&name, &key, size, verify))?)
    }

    fn check_archived(&mut self, name: String, key: String, size: u64) -> Result<wit::UploadReceipt, wit::StorageError> {
        let s = self.storage()?;
        Ok(s.runtime.block_on(s.check_archived(&name, &key, size))?)
    }

    fn delete_segment(&mut self, name: String, key: String) -> Result<(), wit::StorageError> {
        let s = self.storage()?;
        s.runtime.block_on(s.delete_archived(&name, &key))?;
        Ok(s.wal.sync()?)
    }

    fn record_chain_start(&mut self, start: u64) -> Result<(), wit::StorageError> {
        let s = self.storage()?;
        Ok(s.runtime.block_on(s.record_chain_start(start))?)
    }
}
