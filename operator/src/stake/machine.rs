//! The StakePosition state machine and its ledger intents: pure functions.
//!
//! ```text
//! Pending ──lock confirmed──► Active ──spec.unbond or deletion──► Unbonding ──ends──► Withdrawn ──deleted──► (finalizer released)
//!    │                          │                                   │
//!    │                          └──────── slash confirmed ──────────┴──► Slashed ──unbond/deletion──► Unbonding
//!    └── deleted with nothing locked ──► (finalizer released)
//! ```
//!
//! Every ledger operation is an exactly-once settlement recorded in
//! `status.operations` before anything is sent (keys `<uid>/lock`, `<uid>/withdraw`,
//! `<uid>/slash/<incident>`). While any operation is planned or sent, the controller
//! only drives the executor; the next step is decided once none is in flight.
//! A failed lock (the owner's wallet could not pay) leaves the position `Pending`
//! with a message: nothing moved, delete and recreate it to try again.

use solgrid_crds::{LedgerRecord, SettlementState, StakePhase};
use solgrid_market::ledger::{Account, Amount, Intent, Movement, Op, Token};
use solgrid_market::money::MoneyError;
use solgrid_market::staking::StakingConfig;

/// Purposes of the ledger operations of a position.
pub const LOCK: &str = "lock";
pub const WITHDRAW: &str = "withdraw";
pub const SLASH: &str = "slash";

/// The idempotency key of the lock.
pub fn lock_key(uid: &str) -> String {
    format!("{uid}/lock")
}

/// The idempotency key of the withdrawal.
pub fn withdraw_key(uid: &str) -> String {
    format!("{uid}/withdraw")
}

/// The idempotency key of the slash for a verification incident.
pub fn slash_key(uid: &str, incident: &str) -> String {
    format!("{uid}/slash/{incident}")
}

/// What the controller sees of a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View<'a> {
    pub phase: StakePhase,
    pub amount: Amount,
    pub locked: Amount,
    pub unbond: bool,
    pub deleting: bool,
    pub owner_wallet: Option<&'a str>,
    pub unbonding_ends_ms: Option<u64>,
    pub operations: &'a [LedgerRecord],
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Operations are planned or sent: drive the executor.
    Execute,
    /// Read the owner's wallet address from the Secret.
    ReadWallet,
    /// Record the lock plan, then execute it.
    PlanLock,
    /// The lock failed: nothing moved; wait for the position to be recreated.
    LockFailed,
    /// Start unbonding now; it ends at the given time.
    StartUnbonding,
    /// Unbonding until then.
    WaitUntil(u64),
    /// Record the withdrawal of everything still locked, then execute it.
    PlanWithdraw,
    /// Nothing locked any more after unbonding (slashed to zero): Withdrawn.
    MarkWithdrawn,
    /// Remove the finalizer.
    Release,
    /// Nothing to do.
    Idle,
}

/// Whether a record still needs the executor.
pub fn unsettled(r: &LedgerRecord) -> bool {
    matches!(r.state, SettlementState::Planned | SettlementState::Sent)
}

fn op<'a>(ops: &'a [LedgerRecord], purpose: &str) -> Option<&'a LedgerRecord> {
    ops.iter().rev().find(|r| r.purpose == purpose)
}

/// Decides the next step (module docs).
pub fn decide(v: &View<'_>, now_ms: u64) -> Step {
    if v.operations.iter().any(unsettled) {
        return Step::Execute;
    }
    match v.phase {
        StakePhase::Pending => {
            let lock = op(v.operations, LOCK);
            if v.deleting {
                // nothing in flight and nothing locked (a confirmed lock moves to Active)
                return Step::Release;
            }
            match lock.map(|r| r.state) {
                Some(SettlementState::Failed) => Step::LockFailed,
                Some(_) => Step::Idle,
                None if v.owner_wallet.is_none() => Step::ReadWallet,
                None => Step::PlanLock,
            }
        }
        StakePhase::Active | StakePhase::Slashed => {
            if v.locked == 0 {
                if v.deleting {
                    Step::Release
                } else if v.unbond {
                    Step::MarkWithdrawn
                } else {
                    Step::Idle
                }
            } else if v.unbond || v.deleting {
                Step::StartUnbonding
            } else {
                Step::Idle
            }
        }
        StakePhase::Unbonding => match v.unbonding_ends_ms {
            Some(end) if now_ms < end => Step::WaitUntil(end),
            _ if v.locked == 0 => Step::MarkWithdrawn,
            _ => match op(v.operations, WITHDRAW).map(|r| r.state) {
                // failed withdrawals are surfaced (condition) and not retried blindly
                Some(SettlementState::Failed) => Step::Idle,
                _ => Step::PlanWithdraw,
            },
        },
        StakePhase::Withdrawn => {
            if v.deleting {
                Step::Release
            } else {
                Step::Idle
            }
        }
    }
}

/// The lock: owner wallet → stake vault.
pub fn lock_intent(uid: &str, owner: &str, amount: Amount) -> Intent {
    Intent {
        key: lock_key(uid),
        movements: vec![Movement {
            token: Token::Io,
            op: Op::Transfer {
                from: Account::Wallet(owner.to_string()),
                to: Account::StakeVault,
                amount,
            },
        }],
    }
}

/// The withdrawal: stake vault → owner wallet.
pub fn withdraw_intent(uid: &str, owner: &str, amount: Amount) -> Intent {
    Intent {
        key: withdraw_key(uid),
        movements: vec![Movement {
            token: Token::Io,
            op: Op::Transfer {
                from: Account::StakeVault,
                to: Account::Wallet(owner.to_string()),
                amount,
            },
        }],
    }
}

/// The intents of a position's records, rebuilt deterministically from the position
/// (the records keep keys and states, not amounts): lock = `spec.amount`; withdraw
/// = what is locked; slash = the market's slash of what is locked
/// ([`StakingConfig::slash`]). Amounts only
/// change when an operation confirms, and a new operation is only planned when none
/// is in flight, so a rebuilt intent always equals the one first recorded.
pub fn intents_of(
    uid: &str,
    owner: Option<&str>,
    amount: Amount,
    locked: Amount,
    staking: &StakingConfig,
    ops: &[LedgerRecord],
) -> Result<Vec<Intent>, MoneyError> {
    let mut out = Vec::with_capacity(ops.len());
    for r in ops {
        let intent = match r.purpose.as_str() {
            LOCK => lock_intent(uid, owner.unwrap_or_default(), amount),
            WITHDRAW => withdraw_intent(uid, owner.unwrap_or_default(), locked),
            SLASH => staking.slash(&[locked])?.intent(r.key.clone()),
            _ => continue,
        };
        out.push(Intent {
            key: r.key.clone(),
            ..intent
        });
    }
    Ok(out)
}

/// Whether a position counts toward its node's stake total.
pub fn counts_for_node(phase: StakePhase) -> bool {
    matches!(phase, StakePhase::Active | StakePhase::Unbonding)
}

/// Whether a position can be slashed for an incident at `incident_ms`: it holds
/// locked tokens, was locked before the incident, and is not being withdrawn.
pub fn slashable(
    phase: StakePhase,
    locked: Amount,
    active_since_ms: Option<u64>,
    incident_ms: u64,
    ops: &[LedgerRecord],
) -> bool {
    matches!(
        phase,
        StakePhase::Active | StakePhase::Unbonding | StakePhase::Slashed
    ) && locked > 0
        && active_since_ms.is_some_and(|t| t <= incident_ms)
        && !ops.iter().any(|r| r.purpose == WITHDRAW)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(purpose: &str, state: SettlementState) -> LedgerRecord {
        LedgerRecord {
            key: format!("u/{purpose}"),
            purpose: purpose.into(),
            state,
            ..Default::default()
        }
    }

    fn view<'a>(phase: StakePhase, ops: &'a [LedgerRecord]) -> View<'a> {
        View {
            phase,
            amount: 100,
            locked: 0,
            unbond: false,
            deleting: false,
            owner_wallet: Some("owner"),
            unbonding_ends_ms: None,
            operations: ops,
        }
    }

    #[test]
    fn pending_paths() {
        let none: [LedgerRecord; 0] = [];
        let mut v = view(StakePhase::Pending, &none);
        assert_eq!(decide(&v, 0), Step::PlanLock);
        v.owner_wallet = None;
        assert_eq!(decide(&v, 0), Step::ReadWallet);
        v.deleting = true;
        assert_eq!(decide(&v, 0), Step::Release);
        let planned = [rec(LOCK, SettlementState::Planned)];
        let v = view(StakePhase::Pending, &planned);
        assert_eq!(decide(&v, 0), Step::Execute);
        // deleting with a lock in flight: finish it first
        assert_eq!(
            decide(
                &View {
                    deleting: true,
                    ..v
                },
                0
            ),
            Step::Execute
        );
        let failed = [rec(LOCK, SettlementState::Failed)];
        assert_eq!(
            decide(&view(StakePhase::Pending, &failed), 0),
            Step::LockFailed
        );
    }

    /// `locked` idles in `v`'s phase until the owner asks to unbond; then it starts unbonding.
    fn idles_until_unbond(v: &mut View, locked: Amount) {
        v.locked = locked;
        assert_eq!(decide(v, 0), Step::Idle);
        v.unbond = true;
        assert_eq!(decide(v, 0), Step::StartUnbonding);
    }

    #[test]
    fn active_unbond_withdraw() {
        let ops = [rec(LOCK, SettlementState::Confirmed)];
        let mut v = view(StakePhase::Active, &ops);
        idles_until_unbond(&mut v, 100);
        v.unbond = false;
        v.deleting = true;
        assert_eq!(decide(&v, 0), Step::StartUnbonding);
        v.phase = StakePhase::Unbonding;
        v.unbonding_ends_ms = Some(1_000);
        assert_eq!(decide(&v, 999), Step::WaitUntil(1_000));
        assert_eq!(decide(&v, 1_000), Step::PlanWithdraw);
        let ops2 = [
            rec(LOCK, SettlementState::Confirmed),
            rec(WITHDRAW, SettlementState::Sent),
        ];
        v.operations = &ops2;
        assert_eq!(decide(&v, 1_000), Step::Execute);
        let ops3 = [
            rec(LOCK, SettlementState::Confirmed),
            rec(WITHDRAW, SettlementState::Confirmed),
        ];
        let w = View {
            phase: StakePhase::Withdrawn,
            locked: 0,
            operations: &ops3,
            ..v
        };
        assert_eq!(decide(&w, 2_000), Step::Release);
        assert_eq!(
            decide(
                &View {
                    deleting: false,
                    ..w
                },
                2_000
            ),
            Step::Idle
        );
        // slashed to nothing while unbonding
        let u = View {
            phase: StakePhase::Unbonding,
            locked: 0,
            unbonding_ends_ms: Some(0),
            operations: &ops,
            ..v
        };
        assert_eq!(decide(&u, 5), Step::MarkWithdrawn);
    }

    #[test]
    fn slashed_can_unbond() {
        let ops = [rec(LOCK, SettlementState::Confirmed)];
        let mut v = view(StakePhase::Slashed, &ops);
        idles_until_unbond(&mut v, 50);
        v.locked = 0;
        assert_eq!(decide(&v, 0), Step::MarkWithdrawn);
    }

    #[test]
    fn intents_and_amounts() {
        let ops = [
            rec(LOCK, SettlementState::Confirmed),
            LedgerRecord {
                key: slash_key("u", "7"),
                purpose: SLASH.into(),
                state: SettlementState::Planned,
                ..Default::default()
            },
            rec(WITHDRAW, SettlementState::Planned),
            rec("unknown", SettlementState::Planned),
        ];
        let staking = StakingConfig {
            slash_bps: 5_000,
            ..StakingConfig::default()
        };
        let i = intents_of("u", Some("w"), 100, 80, &staking, &ops).unwrap();
        assert_eq!(i.len(), 3);
        assert_eq!(i[0], lock_intent("u", "w", 100));
        assert_eq!(i[1].key, "u/slash/7");
        assert_eq!(
            i[1].movements[0].op,
            Op::Burn {
                from: Account::StakeVault,
                amount: 40
            }
        );
        assert_eq!(i[2], withdraw_intent("u", "w", 80));
        assert!(counts_for_node(StakePhase::Unbonding) && !counts_for_node(StakePhase::Slashed));
        assert!(slashable(StakePhase::Active, 1, Some(5), 10, &ops[..1]));
        assert!(!slashable(StakePhase::Active, 1, Some(11), 10, &ops[..1]));
        assert!(!slashable(StakePhase::Active, 1, Some(5), 10, &ops));
        assert!(!slashable(StakePhase::Pending, 1, Some(5), 10, &[]));
        assert!(!slashable(StakePhase::Withdrawn, 0, Some(5), 10, &[]));
    }
}
