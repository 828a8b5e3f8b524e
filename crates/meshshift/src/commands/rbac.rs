//! `meshshift rbac`: prints the ClusterRole and Roles (and, with `--service-account`, the bindings) that
//! let `status`, `plan`, `apply`, `resume` and `rollback` run with least privilege. The rules are pure
//! data in `meshshift_core::rbac`; this command only renders them for `kubectl apply -f -`.
//!
//! Exit codes: 0 printed, 2 an invalid name.

use meshshift_core::rbac::{RbacSpec, objects};
use serde_json::{Value, json};

use crate::cli::{ManifestFormat, RbacArgs};
use crate::exit::Code;

/// The spec `args` ask for.
fn spec(args: &RbacArgs) -> Result<RbacSpec, String> {
    let service_account = match &args.service_account {
        None => None,
        Some(s) => match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Some((ns.to_owned(), name.to_owned()))
            }
            _ => return Err(format!("--service-account {s:?}: expected NAMESPACE/NAME")),
        },
    };
    Ok(RbacSpec {
        name: args.name.clone(),
        state_namespace: args.state_namespace.clone(),
        namespace_scoped: args.namespace_scoped.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
        service_account,
    })
}

/// `objs` as `kubectl apply -f -` reads them: YAML documents, or a JSON `v1` List.
fn render(objs: &[Value], format: ManifestFormat) -> Result<String, String> {
    match format {
        ManifestFormat::Json => {
            serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": objs}))
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }
        ManifestFormat::Yaml => {
            let mut out = String::new();
            for o in objs {
                out.push_str("---\n");
                out.push_str(&serde_saphyr::to_string(o).map_err(|e| e.to_string())?);
            }
            Ok(out)
        }
    }
}

/// Runs the command.
pub fn run(args: &RbacArgs) -> Code {
    let printed =
        spec(args).and_then(|s| objects(&s).map_err(|e| e.to_string())).and_then(|objs| render(&objs, args.output));
    match printed {
        Ok(text) => {
            print!("{text}");
            Code::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Code::Usage
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RbacArgs {
        use clap::Parser;
        let mut all = vec!["meshshift", "rbac"];
        all.extend(extra);
        match crate::cli::Cli::parse_from(all).command {
            crate::cli::Command::Rbac(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn yaml_and_json_carry_the_same_objects() {
        let a = args(&["--namespace-scoped", "istio-system,bookinfo", "--service-account", "ops/upgrader"]);
        let objs = objects(&spec(&a).expect("spec")).expect("objects");
        let yaml = render(&objs, ManifestFormat::Yaml).expect("yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("parse yaml");
        assert_eq!(docs, objs, "the YAML stream reads back as the same objects (core group \"\" kept)");
        let list: Value = serde_json::from_str(&render(&objs, ManifestFormat::Json).expect("json")).expect("parse");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().expect("items"), &objs);
    }

    #[test]
    fn bad_service_account_is_a_usage_error() {
        assert!(spec(&args(&["--service-account", "nobody"])).is_err());
        assert!(spec(&args(&["--service-account", "a/b/c"])).is_err());
        assert_eq!(run(&args(&["--namespace-scoped", "Not_A_Namespace"])), Code::Usage);
    }

    #[test]
    fn the_gate_namespace_is_the_engines() {
        assert_eq!(meshshift_core::rbac::GATE_NAMESPACE, meshshift_engine::gates::inject::GATE_NAMESPACE);
    }
}
