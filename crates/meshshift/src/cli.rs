//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Zero-downtime blue/green Istio revision upgrades, proven under traffic.
#[derive(Debug, Parser)]
#[command(name = "meshshift", version, about)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How to reach the cluster, as kubectl does.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Output formats of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Table,
    /// JSON for programs.
    Json,
    /// YAML for people and programs.
    Yaml,
}

/// Finding severities, for `--fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Any finding.
    Info,
    /// Warnings and errors.
    Warning,
    /// Errors only.
    Error,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report control-plane revisions, tags, injection, proxies, gateways and findings.
    Status(StatusArgs),
    /// Compute the blue/green upgrade plan to a version (reads the cluster, changes nothing).
    Plan(PlanArgs),
    /// Execute an upgrade plan step by step: journaled, gated, resumable, reversible.
    Apply(Box<ApplyArgs>),
    /// Continue an interrupted apply (or rollback) from its journal.
    Resume(ContinueArgs),
    /// Undo an apply's completed steps in reverse order, restoring every prior value.
    Rollback(ContinueArgs),
    /// Send HTTP requests at a constant rate (open loop) and record every one (loopback and lab addresses only).
    Probe(ProbeArgs),
    /// Write report.json and a self-contained report.html for a run directory written by apply.
    Report(ReportArgs),
    /// Print the least-privilege ClusterRole and Roles meshshift needs (no Secrets, no wildcards).
    Rbac(RbacArgs),
    /// The lab: a real Kubernetes control plane on this machine.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// `meshshift status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Exit with code 6 when a finding of this severity or worse is reported.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
}

/// LoadBalancer switch strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// Patch the selector from blue to green in one update.
    Switch,
    /// Select both colours, wait for health checks, then narrow to green.
    WidenNarrow,
}

/// What to plan, beyond the target version (shared by `plan` and `apply`).
#[derive(Debug, Clone, Args)]
pub struct PlanOptions {
    /// Target revision name (default: from the version, e.g. 1-10-6).
    #[arg(long)]
    pub revision: Option<String>,
    /// Source revision, when several control planes are installed.
    #[arg(long)]
    pub from: Option<String>,
    /// The user-owned LoadBalancer Service in front of the gateways, as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME")]
    pub gateway_service: Option<String>,
    /// Namespaces to migrate, in order (default: every namespace the source revision injects).
    #[arg(long, value_delimiter = ',', conflicts_with = "namespace_selector")]
    pub namespaces: Option<Vec<String>>,
    /// Only migrate the source revision's namespaces whose labels match (e.g. `team=payments,tier!=canary`).
    #[arg(long, value_name = "SELECTOR")]
    pub namespace_selector: Option<String>,
    /// Move only these revision tags of the source (repeatable or comma-separated; one tag per run is a
    /// canary order). Namespaces pinned to the source revision then move only when --namespaces or
    /// --namespace-selector names them, and the source is retired once no tag points at it.
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Option<Vec<String>>,
    /// How the LoadBalancer switches.
    #[arg(long, value_enum, default_value_t = Strategy::Switch)]
    pub strategy: Strategy,
    /// Plan one hop even where Istio's rules need more.
    #[arg(long)]
    pub allow_skip: bool,
    /// Seconds blue keeps serving after the switch before it is scaled down.
    #[arg(long, default_value_t = 30)]
    pub soak_seconds: u64,
    /// How the new control plane is installed.
    #[arg(long, value_enum, default_value_t = InstallerArg::Manifests)]
    pub installer: InstallerArg,
    /// The istiod Helm chart for --installer helm: a repository reference or a local chart directory.
    #[arg(long, value_name = "CHART", default_value = "istio/istiod")]
    pub helm_chart: String,
}

/// Control-plane installers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InstallerArg {
    /// meshshift's rendered manifests, object by object.
    Manifests,
    /// `helm upgrade --install istiod-<rev> <chart> --set revision=<rev>` (helm on PATH or $MESHSHIFT_HELM).
    Helm,
    /// `istioctl install --revision <rev>` (istioctl on PATH or $MESHSHIFT_ISTIOCTL).
    Istioctl,
    /// An operator per revision and an IstioOperator resource.
    Operator,
}

/// `meshshift plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Target Istio version, e.g. 1.10.6.
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// What to plan.
    #[command(flatten)]
    pub options: PlanOptions,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How a run behaves (`apply`, `resume`, `rollback`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Namespace of meshshift's journal and run lock.
    #[arg(long, default_value = "meshshift", value_name = "NAMESPACE")]
    pub state_namespace: String,
    /// Workloads restarted at once within a namespace.
    #[arg(long, default_value_t = 2)]
    pub parallelism: usize,
    /// Longest wait for any one rollout, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub rollout_timeout: u64,
    /// widen-narrow: seconds both colours stay selected before narrowing to green.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub health_check_wait: u64,
    /// Stop once this step (an id from the plan, e.g. 03-switch-load-balancer) is done; `resume`
    /// continues from there.
    #[arg(long, value_name = "STEP")]
    pub until: Option<String>,
    /// Probe this URL (repeatable; loopback or lab addresses only, e.g. the LoadBalancer's) while the run
    /// works, and gate every step on what it sees.
    #[arg(long = "probe", value_name = "URL")]
    pub probe: Vec<String>,
    /// Requests per second of the probe.
    #[arg(long, default_value_t = 50.0, value_name = "PER_SECOND")]
    pub probe_rate: f64,
    /// Largest share of probe requests that may fail during a step (0: none).
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub error_budget: f64,
    /// Highest p99 latency allowed during a step, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub p99_ceiling_ms: Option<u64>,
    /// Fewest probe requests a step must see before its traffic gate can pass.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
    /// Also gate on Prometheus at this URL (loopback or lab address): the 5xx share of
    /// istio_requests_total reported by the gateways, over --prometheus-window seconds.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Largest 5xx share Prometheus may report during a step.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub prometheus_error_ratio: f64,
    /// The Prometheus gate's window, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub prometheus_window: u64,
    /// What a breached traffic gate does: roll the run back, or stop and leave the decision to you.
    #[arg(long, value_enum, default_value_t = OnBreach::Rollback)]
    pub on_breach: OnBreach,
    /// The run lock's lease, in seconds: how long a crashed run blocks the next (renewed at a third).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub lock_seconds: u64,
    /// Where the run's record (plan, timeline, requests, report) is written
    /// (default: ./meshshift-runs/<time>-<command>).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// What a breached traffic gate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnBreach {
    /// Undo every completed step, last first (the current step first).
    Rollback,
    /// Stop where it is; `resume` or `rollback` later.
    Pause,
}

/// `meshshift apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Target Istio version, e.g. 1.10.6 (or give a saved plan with --plan).
    #[arg(long, value_name = "VERSION", required_unless_present = "plan", conflicts_with = "plan")]
    pub to: Option<String>,
    /// A plan saved with `meshshift plan -o json|yaml`; refused when the cluster drifted from it.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// What to plan (with --to).
    #[command(flatten)]
    pub options: PlanOptions,
    /// How the run behaves.
    #[command(flatten)]
    pub run: RunArgs,
    /// Check everything (plan, drift, lock, journal) and print the plan, but change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `meshshift resume` and `meshshift rollback`.
#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How the run behaves.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `meshshift probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// URLs to request, round-robin (http:// on 127.0.0.0/8, ::1, localhost or the lab's 10.0.0.0/8).
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Requests per second, over all URLs together.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: f64,
    /// How long to send for, e.g. 30s, 500ms, 2m (Ctrl-C stops early and still reports).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Connections per host; requests beyond them queue, and their latency shows it [default: the rate
    /// per second, at least 16].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Extra request header NAME:VALUE (repeatable; `Host:` replaces the URL's host).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Per-request timeout, from the moment a connection takes the request.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub timeout: std::time::Duration,
    /// After the last request is due, how long unfinished requests may still take (then: failed, aborted).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub drain: std::time::Duration,
    /// Write one JSON line per request to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Summary format (json and yaml include the 100 ms buckets).
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    meshshift_probe::parse_duration(s).map_err(|e| e.to_string())
}

/// `meshshift report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory `apply` wrote (plan.json, timeline.jsonl, and the probe's records when traffic was
    /// measured); report.json and report.html are written into it.
    #[arg(value_name = "RUN_DIR")]
    pub dir: PathBuf,
}

/// `meshshift rbac`.
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// Grant the mesh's namespaced writes only in these namespaces (a Role in each: the control plane's,
    /// the gateways' and every namespace to migrate) instead of cluster-wide; reads stay cluster-wide.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "NAMESPACE")]
    pub namespace_scoped: Vec<String>,
    /// Namespace of meshshift's journal and run lock (as given to apply, resume and rollback).
    #[arg(long, default_value = "meshshift", value_name = "NAMESPACE")]
    pub state_namespace: String,
    /// Also define this ServiceAccount and bind every role to it.
    #[arg(long, value_name = "NS/NAME")]
    pub service_account: Option<String>,
    /// Name of the ClusterRole, Roles and bindings.
    #[arg(long, default_value = "meshshift")]
    pub name: String,
    /// Output format: a multi-document YAML stream or a JSON List (both for `kubectl apply -f -`).
    #[arg(short, long, value_enum, default_value_t = ManifestFormat::Yaml)]
    pub output: ManifestFormat,
}

/// Formats of Kubernetes objects printed for `kubectl apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManifestFormat {
    /// YAML documents separated by `---`.
    Yaml,
    /// A `v1` List.
    Json,
}

/// `meshshift lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start a lab: a real control plane with emulated nodes and service networking, in the background.
    Up(LabUpArgs),
    /// Stop the lab and remove its directory.
    Down(LabDirArgs),
    /// Show whether the lab runs, and its nodes and load balancers.
    Status(LabDirArgs),
    /// Print shell exports for the lab (KUBECONFIG, ingress address).
    Env(LabDirArgs),
    /// Install an Istio control plane revision (and gateways) into the lab.
    InstallIstio(InstallIstioArgs),
    /// Install bookinfo into the lab.
    InstallBookinfo(InstallBookinfoArgs),
    /// The demo: a lab, Istio A behind a LoadBalancer, bookinfo, steady traffic, the full blue/green
    /// upgrade to B, and its report. Fails if any request failed.
    Demo(LabDemoArgs),
    /// Run a lab control plane in the foreground (used by `lab up` and by tests).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

/// `meshshift lab supervise`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The lab's directory (certificates, data, logs, kubeconfig).
    #[arg(long)]
    pub dir: PathBuf,
    /// Directory with kube-apiserver, kube-controller-manager and kube-scheduler.
    #[arg(long, env = "MESHSHIFT_K8S_BIN")]
    pub bin_dir: Option<PathBuf>,
    /// Shut down when standard input closes (the parent died).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
    /// Emulated nodes (0: control plane only).
    #[arg(long, default_value_t = 0)]
    pub nodes: u32,
    /// Run service networking (ClusterIP forwarding, load balancers).
    #[arg(long)]
    pub services: bool,
    /// Delay before Service and Endpoints changes reach the forwarders, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub propagation_delay_ms: u64,
    /// Run Prometheus in the lab.
    #[arg(long)]
    pub prometheus: bool,
}

/// The lab directory.
#[derive(Debug, Clone, Args)]
pub struct LabDirArgs {
    /// The lab's directory (default: $MESHSHIFT_LAB_DIR, else ~/.local/state/meshshift/lab).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `meshshift lab up`.
#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// The lab directory.
    #[command(flatten)]
    pub dir: LabDirArgs,
    /// Emulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Delay before Service and Endpoints changes reach the forwarders, in milliseconds (kube-proxy lag).
    #[arg(long, default_value_t = 1000)]
    pub propagation_delay_ms: u64,
    /// Also run Prometheus (Debian's package) scraping the emulated proxies every second.
    #[arg(long)]
    pub prometheus: bool,
}

/// `meshshift lab demo`.
#[derive(Debug, Args)]
pub struct LabDemoArgs {
    /// The lab directory.
    #[command(flatten)]
    pub dir: LabDirArgs,
    /// The Istio version installed first.
    #[arg(long, default_value = "1.9.7")]
    pub from: String,
    /// The Istio version upgraded to.
    #[arg(long, default_value = "1.10.6")]
    pub to: String,
    /// Requests per second through the LoadBalancer during the upgrade.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Emulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Seconds blue keeps serving after the switch.
    #[arg(long, default_value_t = 10)]
    pub soak_seconds: u64,
    /// Where the run record and report go (default: ./meshshift-runs/<time>-demo-<from>-to-<to>).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Keep the lab running afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// `meshshift lab install-istio`.
#[derive(Debug, Args)]
pub struct InstallIstioArgs {
    /// The lab directory.
    #[command(flatten)]
    pub dir: LabDirArgs,
    /// Istio version (1.9 or later), e.g. 1.9.7.
    #[arg(long)]
    pub version: String,
    /// Revision name (default: derived from the version, e.g. 1-9-7).
    #[arg(long, conflicts_with = "default")]
    pub revision: Option<String>,
    /// Install as the default (non-revisioned) control plane.
    #[arg(long)]
    pub default: bool,
    /// Ingress gateway(s) of this revision to deploy, as [NAMESPACE/]NAME (namespace default istio-ingress).
    #[arg(long, value_name = "[NS/]NAME")]
    pub gateway: Vec<String>,
    /// Deploy gateways with an explicit proxy image instead of by injection.
    #[arg(long)]
    pub legacy_gateway: bool,
    /// Also create the user-owned LoadBalancer Service NS/NAME selecting this revision's gateway (if absent).
    #[arg(long, value_name = "NS/NAME")]
    pub load_balancer: Option<String>,
}

/// `meshshift lab install-bookinfo`.
#[derive(Debug, Args)]
pub struct InstallBookinfoArgs {
    /// The lab directory.
    #[command(flatten)]
    pub dir: LabDirArgs,
    /// Namespace.
    #[arg(long, default_value = "bookinfo")]
    pub namespace: String,
    /// Replicas of each Deployment.
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// Label the namespace for this revision (istio.io/rev); `default` labels istio-injection=enabled.
    #[arg(long)]
    pub revision: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
