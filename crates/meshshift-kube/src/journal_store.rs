//! The journal in the cluster: a ConfigMap holding the plan and the journal as JSON. Every save is
//! guarded by the resourceVersion the run last saw, so a concurrent writer is detected, never overwritten.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use meshshift_core::journal::Journal;
use meshshift_core::plan::Plan;

/// The ConfigMap's name.
pub const JOURNAL_NAME: &str = "meshshift-journal";

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalStoreError {
    /// Someone else changed the journal since this run read it.
    #[error(
        "the journal {namespace}/{JOURNAL_NAME} was changed by someone else; re-read it (meshshift resume) rather than overwrite it"
    )]
    Conflict {
        /// Namespace.
        namespace: String,
    },
    /// The stored journal does not parse.
    #[error(
        "the journal {namespace}/{JOURNAL_NAME} is corrupted ({detail}): meshshift cannot tell what its run changed, so it neither resumes nor rolls it back; inspect it (kubectl -n {namespace} get configmap {JOURNAL_NAME} -o yaml), restore it, or undo its steps by hand and delete it"
    )]
    Corrupted {
        /// Namespace.
        namespace: String,
        /// What is wrong.
        detail: String,
    },
    /// The API failed.
    #[error("journal {namespace}/{JOURNAL_NAME}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// A journal as stored, with the version it was read or written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The plan being executed.
    pub plan: Plan,
    /// Its journal.
    pub journal: Journal,
    /// The ConfigMap's resourceVersion.
    pub resource_version: String,
}

/// Reads and writes the journal of namespace `namespace`.
#[derive(Debug, Clone)]
pub struct JournalStore {
    api: Api<ConfigMap>,
    namespace: String,
}

impl JournalStore {
    /// The store in `namespace` (which must exist).
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client.clone(), namespace), namespace: namespace.to_owned() }
    }

    fn api_err(&self, source: kube::Error) -> JournalStoreError {
        match &source {
            kube::Error::Api(s) if s.code == 409 => JournalStoreError::Conflict { namespace: self.namespace.clone() },
            _ => JournalStoreError::Api { namespace: self.namespace.clone(), source },
        }
    }

    fn corrupted(&self, detail: impl ToString) -> JournalStoreError {
        JournalStoreError::Corrupted { namespace: self.namespace.clone(), detail: detail.to_string() }
    }

    fn config_map(
        &self,
        plan: &Plan,
        journal: &Journal,
        resource_version: Option<String>,
    ) -> Result<ConfigMap, JournalStoreError> {
        let data: BTreeMap<String, String> = [
            ("plan.json".to_owned(), serde_json::to_string_pretty(plan).map_err(|e| self.corrupted(e))?),
            ("journal.json".to_owned(), serde_json::to_string_pretty(journal).map_err(|e| self.corrupted(e))?),
        ]
        .into();
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(JOURNAL_NAME.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some([("app.kubernetes.io/managed-by".to_owned(), "meshshift".to_owned())].into()),
                resource_version,
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        })
    }

    /// Creates the journal of a new run; fails with `Conflict` when one exists (resume or roll it back).
    pub async fn create(&self, plan: &Plan, journal: &Journal) -> Result<Stored, JournalStoreError> {
        let created = self
            .api
            .create(&PostParams::default(), &self.config_map(plan, journal, None)?)
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(Stored {
            plan: plan.clone(),
            journal: journal.clone(),
            resource_version: created.metadata.resource_version.unwrap_or_default(),
        })
    }

    /// Loads the journal, if a run left one.
    pub async fn load(&self) -> Result<Option<Stored>, JournalStoreError> {
        let Some(cm) = self.api.get_opt(JOURNAL_NAME).await.map_err(|e| self.api_err(e))? else { return Ok(None) };
        let data = cm.data.unwrap_or_default();
        let field = |k: &str| data.get(k).ok_or_else(|| self.corrupted(format!("no {k}")));
        let plan: Plan =
            serde_json::from_str(field("plan.json")?).map_err(|e| self.corrupted(format!("plan.json: {e}")))?;
        let journal: Journal =
            serde_json::from_str(field("journal.json")?).map_err(|e| self.corrupted(format!("journal.json: {e}")))?;
        if journal.steps.len() != plan.steps.len() || journal.steps.iter().zip(&plan.steps).any(|(j, p)| j.id != p.id) {
            return Err(self.corrupted("journal.json does not match plan.json's steps"));
        }
        Ok(Some(Stored { plan, journal, resource_version: cm.metadata.resource_version.unwrap_or_default() }))
    }

    /// Saves `stored.journal`, guarded by `stored.resource_version`; updates the version on success.
    pub async fn save(&self, stored: &mut Stored) -> Result<(), JournalStoreError> {
        let cm = self.config_map(&stored.plan, &stored.journal, Some(stored.resource_version.clone()))?;
        let saved = self.api.replace(JOURNAL_NAME, &PostParams::default(), &cm).await.map_err(|e| self.api_err(e))?;
        stored.resource_version = saved.metadata.resource_version.unwrap_or_default();
        Ok(())
    }

    /// Moves a finished run's journal aside (to `meshshift-journal-<resourceVersion>`) so a new run can
    /// start; returns the archived name. The record of what was done is kept, not deleted.
    pub async fn archive(&self, stored: &Stored) -> Result<String, JournalStoreError> {
        let name = format!("{JOURNAL_NAME}-{}", stored.resource_version);
        let mut copy = self.config_map(&stored.plan, &stored.journal, None)?;
        copy.metadata.name = Some(name.clone());
        match self.api.create(&PostParams::default(), &copy).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(self.api_err(e)),
        }
        let guard = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(stored.resource_version.clone()),
                uid: None,
            }),
            ..Default::default()
        };
        self.api.delete(JOURNAL_NAME, &guard).await.map_err(|e| self.api_err(e))?;
        Ok(name)
    }
}
