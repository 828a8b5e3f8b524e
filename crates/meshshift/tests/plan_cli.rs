//! `meshshift plan` refuses bad input before it talks to any cluster.

mod support;

use support::meshshift;

#[test]
fn malformed_input_is_refused_without_a_cluster() {
    let missing = "/nonexistent/kubeconfig";
    for (args, needle) in [
        (vec!["plan", "--to", "1.x.7"], "--to"),
        (vec!["plan", "--to", "1.10.6", "--revision", "1.10.6"], "did you mean `1-10-6`"),
        (vec!["plan", "--to", "1.10.6", "--revision", "Canary"], "--revision"),
    ] {
        let mut args = args;
        args.extend(["--kubeconfig", missing]);
        let run = meshshift(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let run = meshshift(&["plan", "--to", "1.10.6", "--kubeconfig", missing]);
    assert_eq!(run.code, 3, "valid input, bad kubeconfig: {}", run.stderr);
}
