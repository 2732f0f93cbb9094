//! Validates what the API server cannot. A malformed job gets a condition and
//! waits for an edit; it is not retried hot and never blocks others.

use super::status::Run;
use super::{cond, pods, quote};
use crate::conditions;
use crate::error::Result;
use kube::runtime::controller::Action;

/// The spec's problem, if it has one: a name too long for its worker pods, or no
/// GPU model to run on.
fn check(r: &Run<'_>) -> std::result::Result<(), String> {
    let cfg = &r.ctx.config;
    pods::validate_name(&r.name, r.job.spec.workers)?;
    quote::target_model(
        &r.job.spec,
        cfg.default_nvidia_model,
        cfg.default_apple_model,
    )
    .map(|_| ())
}

/// `Some(action)`: the spec is invalid (said once by a condition and an Event);
/// the drive ends here. Else the `Valid` condition is set True (when it was not)
/// for the next status write.
pub(super) async fn validate(r: &mut Run<'_>) -> Result<Option<Action>> {
    if let Err(msg) = check(r) {
        r.problem(cond::VALID, "InvalidSpec", msg, "Validate")
            .await?;
        return Ok(Some(Action::await_change()));
    }
    if conditions::get(&r.st.conditions, cond::VALID).is_some_and(|c| c.status != "True") {
        r.condition(cond::VALID, true, "Valid", "the spec is valid");
    }
    Ok(None)
}
