//! The one retry policy for requests: try again only what
//! [`ApiError::retryable`] says may succeed, back off between tries, and
//! give up at the request's deadline with the last error.

use std::time::{Duration, Instant};

use crate::error::ApiError;

/// First pause after a failed try: about one heartbeat, so a leader elected
/// meanwhile is found on the next try.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_millis(400);
/// Time a request has beyond the write timeout: the write's own timeout then
/// ends its last try, and the answer still arrives before the deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// When a request that starts now must be answered.
pub(crate) fn request_deadline(write_timeout: Duration) -> Instant {
    Instant::now() + write_timeout + DEADLINE_SLACK
}

/// The retry state of one request.
pub(crate) struct Retry {
    deadline: Instant,
    pause: Duration,
}

impl Retry {
    pub(crate) fn until(deadline: Instant) -> Retry {
        Retry {
            deadline,
            pause: FIRST_PAUSE,
        }
    }

    /// After a failed try: returns once the next try may start, or the error
    /// to answer with when there is none (not retryable, or the deadline
    /// passed).
    pub(crate) async fn again(&mut self, e: ApiError) -> Result<(), ApiError> {
        if !e.retryable() {
            return Err(e);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(e);
        }
        tokio::time::sleep(self.pause.min(left)).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        if Instant::now() >= self.deadline {
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        deadline: Instant,
        mut attempt: impl FnMut(u32) -> Result<u32, ApiError>,
    ) -> (Result<u32, ApiError>, u32) {
        let mut retry = Retry::until(deadline);
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt(tries) {
                Ok(v) => return (Ok(v), tries),
                Err(e) => {
                    if let Err(e) = retry.again(e).await {
                        return (Err(e), tries);
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_one_succeeds() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (r, tries) = run(deadline, |n| match n {
            1 => Err(ApiError::NotLeader),
            2 => Err(ApiError::NoLeader("no leader".into())),
            3 => Err(ApiError::NoQuorum("no quorum".into())),
            4 => Err(ApiError::Unavailable("connection refused".into())),
            n => Ok(n),
        })
        .await;
        assert_eq!(r, Ok(5));
        assert_eq!(tries, 5);
    }

    #[tokio::test]
    async fn does_not_retry_errors_that_would_fail_again() {
        let deadline = Instant::now() + Duration::from_secs(5);
        for e in [
            ApiError::Invalid("bad".into()),
            ApiError::Conflict("revision".into()),
            ApiError::PermissionDenied("token".into()),
            ApiError::NotFound("nope".into()),
            ApiError::Removed,
            ApiError::MembershipChange("half done".into()),
        ] {
            let started = Instant::now();
            let (r, tries) = run(deadline, |_| Err(e.clone())).await;
            assert_eq!(r, Err(e.clone()));
            assert_eq!(tries, 1, "{e:?}");
            assert!(started.elapsed() < Duration::from_millis(20), "{e:?}");
        }
    }

    #[tokio::test]
    async fn stops_at_the_deadline_with_the_last_error() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let (r, tries) = run(deadline, |n| Err(ApiError::NoQuorum(format!("try {n}")))).await;
        let took = started.elapsed();
        assert_eq!(r, Err(ApiError::NoQuorum(format!("try {tries}"))));
        assert!(
            took >= Duration::from_millis(300),
            "gave up early: {took:?}"
        );
        // Generous: the machine running the tests may be busy.
        assert!(took < Duration::from_millis(550), "overran: {took:?}");
        // 50, 100, 150 (cut to the deadline): backoff, not a busy loop.
        assert!((2..=5).contains(&tries), "{tries} tries");
    }

    #[tokio::test]
    async fn a_deadline_already_passed_means_no_retry() {
        let (r, tries) = run(Instant::now(), |_| Err(ApiError::NotLeader)).await;
        assert_eq!(r, Err(ApiError::NotLeader));
        assert_eq!(tries, 1);
    }
}
