//! `meshshift lab up` / `lab down` through the real binary: a detached lab that survives its starter,
//! is idempotent to start, and leaves no process or directory behind when it goes down.

mod support;

use std::time::{Duration, Instant};

use meshshift_lab::LabState;
use meshshift_lab::testing::process_alive;
use support::meshshift;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn lab_up_and_down_leave_nothing_behind() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("lab");
    let d = dir.to_str().expect("utf-8");

    let run = meshshift(&["lab", "up", "--dir", d, "--nodes", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), format!("export KUBECONFIG={d}/kubeconfig"));
    let state = LabState::read(&dir.join("state.json")).expect("state.json");
    assert!(process_alive(state.pid), "the supervisor outlives `lab up`");
    assert_eq!(state.children.len(), 4, "etcd, apiserver, controller-manager, scheduler: {:?}", state.children);

    let began = Instant::now();
    loop {
        let run = meshshift(&["lab", "status", "--dir", d]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        if run.stdout.matches("Ready=True").count() == 2 {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "two Ready nodes expected:\n{}", run.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }

    let again = meshshift(&["lab", "up", "--dir", d]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains(&format!("already running in {d} (pid {})", state.pid)), "{}", again.stderr);

    let env = meshshift(&["lab", "env", "--dir", d]);
    assert_eq!(env.code, 0, "{}", env.stderr);
    assert!(env.stdout.contains(&format!("export KUBECONFIG={d}/kubeconfig")));

    let down = meshshift(&["lab", "down", "--dir", d]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert!(down.stderr.contains("lab stopped"), "{}", down.stderr);
    assert!(!process_alive(state.pid), "supervisor gone");
    for (name, pid) in &state.children {
        assert!(!process_alive(*pid), "{name} (pid {pid}) gone");
    }
    assert!(!dir.exists(), "lab directory removed");
    assert_eq!(processes_mentioning(d), Vec::<u32>::new(), "no process mentions the lab directory");

    let status = meshshift(&["lab", "status", "--dir", d]);
    assert_eq!(status.code, 1, "no lab: {}", status.stdout);
    let env = meshshift(&["lab", "env", "--dir", d]);
    assert_eq!(env.code, 1);
    assert!(env.stderr.contains("no lab is running") && env.stderr.contains("meshshift lab up"), "{}", env.stderr);
}

#[test]
fn lab_down_refuses_a_directory_that_is_not_a_lab() {
    let parent = tempfile::tempdir().expect("tempdir");
    let precious = parent.path().join("precious");
    std::fs::create_dir(&precious).expect("mkdir");
    std::fs::write(precious.join("notes.txt"), "user data").expect("write");
    let run = meshshift(&["lab", "down", "--dir", precious.to_str().expect("utf-8")]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("is not a lab directory"), "{}", run.stderr);
    assert!(precious.join("notes.txt").exists(), "a user's directory is never removed");
    let run = meshshift(&["lab", "up", "--dir", precious.to_str().expect("utf-8")]);
    assert_ne!(run.code, 0);
    assert!(precious.join("notes.txt").exists());
}
