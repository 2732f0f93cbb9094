//! solgrid's market library: every number the market computes is computed here,
//! once, with no I/O, no async and no clock of its own (time is always passed in).
//!
//! Money is integer base units (`u64`, widened to `u128` inside arithmetic).

pub mod ledger;
