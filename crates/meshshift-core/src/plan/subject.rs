//! What an upgrade is about: the source revision and version, the target revision, the user-owned
//! LoadBalancer and its blue gateways, the tags and the namespaces to move. Read from the status analysis.

use crate::green::Recolour;
use crate::model::ClusterSnapshot;
use crate::selector::{Labels, parse_selector, service_selects};
use crate::status::{GatewayServiceStatus, GatewayStatus, InjectionMode, StatusReport, analyze};
use crate::version::{IstioVersion, Revision};

use super::steps::{colour_key, green_name};
use super::{MissedGreen, PlanError, PlanRequest};

/// The LoadBalancer in front of the gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its selector now.
    pub selector: Labels,
}

/// Everything the steps are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The analysed cluster.
    pub report: StatusReport,
    /// Source revision.
    pub from_revision: String,
    /// Source version.
    pub from_version: IstioVersion,
    /// The control plane's namespace.
    pub control_plane_namespace: String,
    /// Target revision.
    pub to_revision: Revision,
    /// The user-owned LoadBalancer, when there is one.
    pub load_balancer: Option<LoadBalancer>,
    /// The source revision's gateways that the LoadBalancer selects.
    pub blue_gateways: Vec<GatewayStatus>,
    /// Tags pointing at the source revision that this plan moves.
    pub tags: Vec<String>,
    /// Tags pointing at the source revision that stay (`--tag` named others): the source is not retired.
    pub tags_left: Vec<String>,
    /// Namespaces to relabel, in order.
    pub namespaces: Vec<String>,
    /// Namespaces injected through a tag of the source (they move with the tag, then restart), except those
    /// `--namespaces` lists (they are relabelled and restarted with the others).
    pub tag_namespaces: Vec<String>,
}

/// Reads the subject of an upgrade from a snapshot.
pub fn find_subject(snapshot: &ClusterSnapshot, request: &PlanRequest) -> Result<Subject, PlanError> {
    let report = analyze(snapshot);
    let source = match (&request.from, report.revisions.as_slice()) {
        (_, []) => return Err(PlanError::NoControlPlane),
        (Some(from), revs) => {
            revs.iter().find(|r| &r.revision == from).ok_or_else(|| PlanError::UnknownSource(from.clone()))?
        }
        (None, [only]) => only,
        (None, revs) => {
            // The revision every proxy and namespace uses, when exactly one is in use.
            let used: Vec<_> = revs
                .iter()
                .filter(|r| {
                    r.proxies > 0 || report.namespaces.iter().any(|n| n.injected_by.as_deref() == Some(&r.revision))
                })
                .collect();
            match used.as_slice() {
                [one] => *one,
                _ => {
                    return Err(PlanError::AmbiguousSource(
                        revs.iter().map(|r| r.revision.clone()).collect::<Vec<_>>().join(", "),
                    ));
                }
            }
        }
    };
    let from_version: IstioVersion = source
        .version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PlanError::UnknownVersion(source.revision.clone()))?;
    let to_revision = request.revision.clone().unwrap_or_else(|| request.to.revision());
    if report.tags.iter().any(|t| t.tag == to_revision.as_str()) {
        return Err(PlanError::RevisionIsTag(to_revision.to_string()));
    }
    let target_version = request.to.to_string();
    let taken = report
        .revisions
        .iter()
        .find(|r| r.revision == to_revision.as_str() && r.version.as_deref() != Some(target_version.as_str()));
    if let Some(existing) = taken {
        return Err(PlanError::RevisionTaken {
            revision: to_revision.to_string(),
            version: existing.version.clone().unwrap_or_else(|| "unknown".into()),
        });
    }

    let lb_candidates: Vec<_> = report
        .gateway_services
        .iter()
        .filter(|s| s.service_type == "LoadBalancer" && s.selects.iter().any(|g| g.revision == source.revision))
        .collect();
    let lb = match &request.gateway_service {
        Some(reference) => {
            let (ns, name) = reference.split_once('/').ok_or_else(|| {
                PlanError::GatewayService(format!("--gateway-service {reference}: expected NAMESPACE/NAME"))
            })?;
            if !snapshot.services.iter().any(|s| s.namespace == ns && s.name == name) {
                return Err(PlanError::GatewayService(format!(
                    "Service {ns}/{name} does not exist; pass the LoadBalancer in front of your gateways"
                )));
            }
            let svc =
                report.gateway_services.iter().find(|s| s.namespace == ns && s.name == name).ok_or_else(|| {
                    PlanError::GatewayService(format!(
                        "Service {ns}/{name} selects no gateway pods; check its selector"
                    ))
                })?;
            Some(svc)
        }
        None => match lb_candidates.as_slice() {
            [] => None,
            [one] => Some(*one),
            many => {
                let names: Vec<String> = many.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect();
                return Err(PlanError::GatewayService(format!(
                    "several LoadBalancers select gateways of {} ({}); choose one with --gateway-service",
                    source.revision,
                    names.join(", ")
                )));
            }
        },
    };
    // The blue gateways are the ones the LoadBalancer selects now; they must be the source revision's (the
    // target's may be selected too: a green deployed and widened to by hand is switched to, not cloned).
    if let Some(s) = lb {
        let mut serves: Vec<String> = s.selects.iter().map(|g| g.revision.clone()).collect();
        serves.sort();
        serves.dedup();
        let foreign = serves.iter().any(|r| r != &source.revision && r != to_revision.as_str());
        if foreign || !serves.contains(&source.revision) {
            return Err(PlanError::LoadBalancerNotOnSource {
                service: format!("{}/{}", s.namespace, s.name),
                from: source.revision.clone(),
                to: to_revision.to_string(),
                serves,
            });
        }
    }
    let blue_gateways: Vec<GatewayStatus> = lb
        .map(|s| {
            report
                .gateways
                .iter()
                .filter(|g| {
                    g.namespace == s.namespace
                        && g.revision == source.revision
                        && s.selects.iter().any(|sel| sel.gateway == g.name)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = lb {
        check_switch_selects_green(s, &blue_gateways, source.revision.as_str(), &from_version, &to_revision, request)?;
    }
    let source_tags: Vec<String> =
        report.tags.iter().filter(|t| t.revision == source.revision).map(|t| t.tag.clone()).collect();
    let tags_namespaces = |tags: &[String]| -> Vec<String> {
        report
            .namespaces
            .iter()
            .filter(|n| match &n.mode {
                InjectionMode::Revision(v) => tags.contains(v),
                // istio-injection=enabled is served by the `default` tag when the source has one: the
                // namespace moves with that tag instead of being pinned to a revision.
                InjectionMode::IstioInjection(v) => {
                    v == "enabled"
                        && tags.iter().any(|t| t == "default")
                        && n.injected_by.as_deref() == Some(source.revision.as_str())
                }
                InjectionMode::None => false,
            })
            .map(|n| n.name.clone())
            .collect()
    };
    // Namespaces of any source tag are never relabelled implicitly, moved by this run or not.
    let all_tag_namespaces = tags_namespaces(&source_tags);
    let tags = match &request.tags {
        None => source_tags.clone(),
        Some(asked) => {
            if let Some(unknown) = asked.iter().find(|t| !source_tags.contains(t)) {
                return Err(PlanError::UnknownTag {
                    tag: unknown.clone(),
                    from: source.revision.clone(),
                    tags: source_tags.clone(),
                });
            }
            source_tags.iter().filter(|t| asked.contains(t)).cloned().collect()
        }
    };
    let tag_namespaces = tags_namespaces(&tags);
    let tags_left: Vec<String> = source_tags.into_iter().filter(|t| !tags.contains(t)).collect();
    let namespaces = match &request.namespaces {
        Some(list) => {
            for ns in list {
                if !report.namespaces.iter().any(|n| &n.name == ns) {
                    return Err(PlanError::UnknownNamespace(ns.clone()));
                }
            }
            // Checked after existence, so a list with both a typo and a repeat reports the typo.
            for (i, ns) in list.iter().enumerate() {
                if list[..i].contains(ns) {
                    return Err(PlanError::DuplicateNamespace(ns.clone()));
                }
            }
            list.clone()
        }
        // `--tag` alone moves its tags only: the namespaces pinned to the source stay for another run.
        None if request.tags.is_some() && request.namespace_selector.is_none() => Vec::new(),
        None => {
            let selector = request
                .namespace_selector
                .as_deref()
                .map(parse_selector)
                .transpose()
                .map_err(PlanError::NamespaceSelector)?;
            let labels_of = |name: &str| snapshot.namespaces.iter().find(|n| n.name == name).map(|n| n.labels.clone());
            report
                .namespaces
                .iter()
                .filter(|n| {
                    n.injected_by.as_deref() == Some(source.revision.as_str()) && !all_tag_namespaces.contains(&n.name)
                })
                .filter(|n| selector.as_ref().is_none_or(|s| s.matches(&labels_of(&n.name).unwrap_or_default())))
                .map(|n| n.name.clone())
                .collect()
        }
    };
    // A tag namespace listed in --namespaces is relabelled (and restarted) with the others: it is not
    // restarted a second time as a tag namespace.
    let tag_namespaces: Vec<String> = tag_namespaces.into_iter().filter(|n| !namespaces.contains(n)).collect();
    Ok(Subject {
        from_revision: source.revision.clone(),
        from_version,
        control_plane_namespace: source.namespace.clone(),
        to_revision,
        load_balancer: lb.map(|s| LoadBalancer {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            selector: s.selector.clone(),
        }),
        blue_gateways,
        tags,
        tags_left,
        namespaces,
        tag_namespaces,
        report,
    })
}

/// Refuses a switch that would leave the LoadBalancer selecting no green gateway. Green is blue recoloured
/// exactly as the executor will deploy it (`green::Recolour`: colour labels naming the source revision move
/// to the target), and the switch sets the selector's colour key to the target revision; every green must
/// match the selector that results, or its share of the traffic would have nowhere to go once blue retires.
fn check_switch_selects_green(
    lb: &GatewayServiceStatus,
    blues: &[GatewayStatus],
    from: &str,
    from_version: &IstioVersion,
    to: &Revision,
    request: &PlanRequest,
) -> Result<(), PlanError> {
    let key = colour_key(&lb.selector);
    let mut after = lb.selector.clone();
    after.insert(key.to_owned(), to.to_string());
    for blue in blues {
        let green = green_name(&blue.name, from, to.as_str());
        let recolour = Recolour {
            from_revision: from.to_owned(),
            to_revision: to.to_string(),
            from_version: from_version.to_string(),
            to_version: request.to.to_string(),
            green_name: green.clone(),
        };
        let deployment = recolour.deployment(&serde_json::json!({
            "metadata": { "name": blue.name },
            "spec": { "template": { "metadata": { "labels": blue.pod_labels } } },
        }));
        let labels: Labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        if !service_selects(&after, &labels) {
            let mismatched = after
                .iter()
                .filter(|(k, v)| labels.get(*k) != Some(*v))
                .map(|(k, v)| match labels.get(k) {
                    Some(other) => format!("{k}={v} but green has {k}={other}"),
                    None => format!("{k}={v} but green has no {k}"),
                })
                .collect();
            return Err(PlanError::SwitchMissesGreen(Box::new(MissedGreen {
                service: format!("{}/{}", lb.namespace, lb.name),
                field: format!("spec.selector.{key}"),
                from: from.to_owned(),
                to: to.to_string(),
                blue: blue.name.clone(),
                green,
                mismatched,
            })));
        }
    }
    Ok(())
}
