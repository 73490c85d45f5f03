//! The `storage` imports of the planner component: a thin adapter from the
//! WIT calls to a [`StorageImports`], which for the archiver is
//! [`Storage`]: it confines every name to the WAL directory and every key
//! to the archive prefix. Benchmarks and tests can put another one in.

use std::sync::Arc;

use crate::bindings::{nodedb, wit};
use crate::storage::Storage;

/// What the storage imports do, in the WIT's terms.
pub trait StorageImports: Send + Sync {
    fn list_wal_dir(&self) -> Result<wit::DirListing, wit::StorageError>;
    fn list_archive(&self) -> Result<wit::ArchiveListing, wit::StorageError>;
    fn upload(&self, name: &str, key: &str, size: u64, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError>;
    fn check_archived(&self, name: &str, key: &str, size: u64) -> Result<wit::UploadReceipt, wit::StorageError>;
    fn delete_segment(&self, name: &str, key: &str) -> Result<(), wit::StorageError>;
    fn record_chain_start(&self, start: u64) -> Result<(), wit::StorageError>;
}

impl StorageImports for Storage {
    fn list_wal_dir(&self) -> Result<wit::DirListing, wit::StorageError> {
        Ok(self.wal.list()?)
    }

    fn list_archive(&self) -> Result<wit::ArchiveListing, wit::StorageError> {
        Ok(self.runtime.block_on(Storage::list_archive(self))?)
    }

    fn upload(&self, name: &str, key: &str, size: u64, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        Ok(self.runtime.block_on(self.upload_segment(name, key, size, verify))?)
    }

    fn check_archived(&self, name: &str, key: &str, size: u64) -> Result<wit::UploadReceipt, wit::StorageError> {
        Ok(self.runtime.block_on(self.check_archived_reading(name, key, size, self.is_disputed(key)))?)
    }

    fn delete_segment(&self, name: &str, key: &str) -> Result<(), wit::StorageError> {
        self.runtime.block_on(self.delete_archived(name, key))?;
        // The WIT asks for a durable removal on each call.
        Ok(self.wal.sync()?)
    }

    fn record_chain_start(&self, start: u64) -> Result<(), wit::StorageError> {
        Ok(self.runtime.block_on(Storage::record_chain_start(self, start))?)
    }
}

/// What a planner session may reach: nothing, or the storage of one archiver.
#[derive(Default)]
pub struct Imports {
    storage: Option<Arc<dyn StorageImports>>,
}

impl Imports {
    pub fn new(storage: Option<Arc<dyn StorageImports>>) -> Self {
        Self { storage }
    }

    fn storage(&self) -> Result<&dyn StorageImports, wit::StorageError> {
        self.storage.as_deref().ok_or_else(|| wit::StorageError::Refused("this session has no storage".into()))
    }
}

impl wit::Host for Imports {}

impl nodedb::wal_archiver::storage::Host for Imports {
    fn list_wal_dir(&mut self) -> Result<wit::DirListing, wit::StorageError> {
        self.storage()?.list_wal_dir()
    }

    fn list_archive(&mut self) -> Result<wit::ArchiveListing, wit::StorageError> {
        self.storage()?.list_archive()
    }

    fn upload(&mut self, name: String, key: String, size: u64, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        self.storage()?.upload(&name, &key, size, verify)
    }

    fn check_archived(&mut self, name: String, key: String, size: u64) -> Result<wit::UploadReceipt, wit::StorageError> {
        self.storage()?.check_archived(&name, &key, size)
    }

    fn delete_segment(&mut self, name: String, key: String) -> Result<(), wit::StorageError> {
        self.storage()?.delete_segment(&name, &key)
    }

    fn record_chain_start(&mut self, start: u64) -> Result<(), wit::StorageError> {
        self.storage()?.record_chain_start(start)
    }
}
