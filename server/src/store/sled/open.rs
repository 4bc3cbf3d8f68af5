//! Opening the sled store: refusing one whose data file was truncated or
//! replaced before sled can mistake it for a new store, and checking (or,
//! in a new store, recording) the format version.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{map_err, sync, Opened};
use crate::store::codec::{FORMAT_KEY, FORMAT_VERSION};
use crate::store::StoreError;

/// sled's page cache; the engine reads records rarely (Get, List, and once
/// per mutation), so a small cache keeps RSS low at full occupancy.
const CACHE_BYTES: u64 = 4 << 20;

/// Opens the database at `path`, creating it if nothing is there.
pub(super) fn open_db(path: &Path) -> Result<Opened, StoreError> {
    // sled opens a data file truncated to nothing as an empty database;
    // remembering that the store existed keeps that from being mistaken
    // for a new one (and every allocation silently forgotten).
    let existed = path.join("conf").exists() || path.join("db").exists();
    // An empty data file beside an existing configuration is a truncated
    // store: refuse before sled opens (and writes to) it.
    let data_len = std::fs::metadata(path.join("db")).map(|m| m.len());
    if path.join("conf").exists() && matches!(data_len, Ok(0) | Err(_)) {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "its data file is missing or empty while its configuration is there: \
                     the data file was truncated or deleted"
                .into(),
        });
    }
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .map_err(|e| match map_err(path, e) {
            StoreError::Io { detail, .. } => StoreError::Open {
                path: path.to_owned(),
                detail,
            },
            other => other,
        })?;
    check_format(path, &db, existed)?;
    let syncer = sync::Syncer::open(path).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        detail: format!("making the store durable: {e}"),
    })?;
    Ok(Opened {
        db,
        syncer: Arc::new(Mutex::new(syncer)),
    })
}

fn check_format(path: &Path, db: &sled::Db, existed: bool) -> Result<(), StoreError> {
    match db.get(FORMAT_KEY).map_err(|e| map_err(path, e))? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    path: path.to_owned(),
                    detail: format!("format version record is {} bytes, not 4", v.len()),
                })?;
            if found == FORMAT_VERSION {
                Ok(())
            } else {
                Err(StoreError::UnknownFormat {
                    path: path.to_owned(),
                    found: found.to_string(),
                    supported: FORMAT_VERSION,
                })
            }
        }
        None if db.is_empty() && existed => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "the store's files exist but hold no records, not even the format version: \
                     the data file was truncated or replaced"
                .into(),
        }),
        None if db.is_empty() => {
            db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                .map_err(|e| map_err(path, e))?;
            db.flush().map_err(|e| map_err(path, e))?;
            Ok(())
        }
        None => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "it holds records but no format version".into(),
        }),
    }
}
