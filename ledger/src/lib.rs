//! solgrid-ledger
