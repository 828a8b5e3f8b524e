//! The checks that prove a step worked before the next one runs (istio-upgrades.md, "What drops
//! requests"): injection by the right revision, a green gateway that serves what blue serves, Endpoints
//! that list only the intended pods, finished rollouts, pods on the right proxy.

pub mod endpoints;
pub mod inject;
pub mod rollout;
pub mod serves;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Ok(true)`, at most `timeout`; the last `Ok(false)`
/// reason is returned on timeout. Used where the condition spans several objects (Endpoints and the Pods
/// they name) so no single watch expresses it.
pub async fn until<F, Fut, E>(timeout: Duration, every: Duration, mut check: F) -> Result<Result<(), String>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<(), String>, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await?;
        match outcome {
            Ok(()) => return Ok(Ok(())),
            Err(why) if Instant::now() >= deadline => return Ok(Err(why)),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}
