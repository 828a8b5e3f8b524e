//! Paginated listing: one list per kind, in pages, and a forbidden kind reported instead of failing.

use std::fmt::Debug;

use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;

/// Page size: large enough for few round trips, small enough to keep apiserver memory bounded.
pub const PAGE_SIZE: u32 = 500;

/// The outcome of listing one kind.
#[derive(Debug)]
pub enum Listed<K> {
    /// Every object.
    All(Vec<K>),
    /// Listing was forbidden (403) with this message.
    Forbidden(String),
}

/// Lists every object of `api` in pages of [`PAGE_SIZE`], following continue tokens.
pub async fn list_all<K>(api: &Api<K>, params: &ListParams) -> Result<Listed<K>, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = params.clone().limit(PAGE_SIZE);
        if let Some(t) = token.take() {
            lp = lp.continue_token(&t);
        }
        let page = match api.list(&lp).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Listed::Forbidden(s.message)),
            Err(e) => return Err(e),
        };
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(Listed::All(out)),
        }
    }
}
