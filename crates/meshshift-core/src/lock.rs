//! Who may run an upgrade: one `apply` at a time per cluster, held through a Lease that expires when its
//! holder dies. This is the pure decision; the adapter reads and writes the Lease.

/// What the Lease says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime` in milliseconds since the epoch.
    pub renewed_at_ms: Option<i64>,
    /// `spec.leaseDurationSeconds`.
    pub duration_s: i64,
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockDecision {
    /// No Lease: create it.
    Create,
    /// Ours (a resumed run): renew it.
    Renew,
    /// Someone else's, but expired (its holder died): take it over.
    TakeOver {
        /// The dead holder.
        previous: String,
    },
    /// Someone else's and live: refuse.
    Held {
        /// The holder.
        holder: String,
        /// Milliseconds until it expires unless renewed.
        expires_in_ms: i64,
    },
}

/// Decides for `me` at `now_ms`.
pub fn decide(lease: Option<&LeaseView>, me: &str, now_ms: i64) -> LockDecision {
    let Some(lease) = lease else { return LockDecision::Create };
    let holder = lease.holder.clone().unwrap_or_default();
    if holder.is_empty() {
        return LockDecision::TakeOver { previous: holder };
    }
    if holder == me {
        return LockDecision::Renew;
    }
    let expires_at = lease.renewed_at_ms.unwrap_or(0) + lease.duration_s * 1000;
    if expires_at <= now_ms {
        LockDecision::TakeOver { previous: holder }
    } else {
        LockDecision::Held { holder, expires_in_ms: expires_at - now_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_at_ms: i64) -> LeaseView {
        LeaseView { holder: Some(holder.into()), renewed_at_ms: Some(renewed_at_ms), duration_s: 15 }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "me", 0), LockDecision::Create);
        assert_eq!(decide(Some(&lease("me", 0)), "me", 99_000), LockDecision::Renew, "our own lease, even expired");
        assert_eq!(
            decide(Some(&lease("other", 10_000)), "me", 20_000),
            LockDecision::Held { holder: "other".into(), expires_in_ms: 5_000 }
        );
        assert_eq!(
            decide(Some(&lease("other", 10_000)), "me", 25_000),
            LockDecision::TakeOver { previous: "other".into() }
        );
        let released = LeaseView { holder: None, renewed_at_ms: None, duration_s: 15 };
        assert_eq!(decide(Some(&released), "me", 0), LockDecision::TakeOver { previous: String::new() });
        let never_renewed = LeaseView { holder: Some("other".into()), renewed_at_ms: None, duration_s: 15 };
        assert_eq!(decide(Some(&never_renewed), "me", 1_000_000), LockDecision::TakeOver { previous: "other".into() });
    }
}
