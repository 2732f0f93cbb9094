//! The journal file is private to the ledger's user: created 0600 whatever the
//! umask, and an existing journal with wider bits is tightened on open.

#![cfg(unix)]

use solgrid_ledger::embedded::JOURNAL_MODE;
use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
use std::os::unix::fs::PermissionsExt;

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_journal_is_created_0600() {
    assert_eq!(JOURNAL_MODE, 0o600);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    let ledger = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
    assert_eq!(mode_of(&path), 0o600, "new journal must be owner-only");
    drop(ledger);
    // reopening keeps it so
    let _ledger = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn a_world_readable_journal_is_tightened_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.journal");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    assert_eq!(mode_of(&path), 0o664);
    let _ledger = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
    assert_eq!(
        mode_of(&path),
        0o600,
        "group/other bits are removed on open"
    );
}
