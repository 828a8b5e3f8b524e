//! Kubernetes adapter.
