//! Supported Istio upgrade paths and proxy/control-plane version skew.
//!
//! The rules, as istio.io states them: an in-place upgrade moves one minor at a time; a revision-based
//! (canary) upgrade may skip one minor per hop (1.8 -> 1.10 is supported); and a control plane may be at
//! most one minor ahead of the proxies it serves, never behind them. Planning against these rules, instead of
//! jumping straight to the target, is what keeps a blue/green upgrade inside what Istio has tested.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::version::IstioVersion;

/// How the control plane is replaced, which decides how far one hop may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Upgrade the existing control plane in place: one minor per hop.
    InPlace,
    /// Install the new version as a separate revision and move workloads over: up to two minors per hop.
    Revision,
}

impl UpgradeMode {
    /// The most minors one supported hop may advance in this mode.
    pub const fn max_minors_per_hop(self) -> u32 {
        match self {
            Self::InPlace => 1,
            Self::Revision => 2,
        }
    }
}

/// Same spelling as the serde form, so logs, CLI output and JSON agree.
impl fmt::Display for UpgradeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InPlace => "in-place",
            Self::Revision => "revision",
        })
    }
}

/// One supported upgrade step.
///
/// Intermediate versions are minor-line placeholders (`patch: None`, shown as `1.10`) meaning "the latest
/// patch of that minor": this crate knows no release list, so the caller picks the concrete patch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hop {
    /// Where the hop starts.
    pub from: IstioVersion,
    /// Where the hop ends.
    pub to: IstioVersion,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// Why no upgrade path can be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The majors differ. Istio has only ever released 1.x and documents no cross-major upgrade, so there are
    /// no rules to plan with; this usually means a mis-read version.
    #[error(
        "cannot plan an upgrade from {from} to {to}: the major version changes, and Istio documents no upgrade path between majors"
    )]
    MajorChange {
        /// The current version.
        from: IstioVersion,
        /// The requested version.
        to: IstioVersion,
    },
    /// The target is further ahead than any upgrade may span (see [`MAX_MINORS`]): a typo or a mis-read
    /// version, refused before any hop is listed.
    #[error(
        "cannot plan an upgrade from {from} to {to}: that is {minors} minors ahead, and no upgrade spans more than {MAX_MINORS} (no Istio release is that far ahead); check the target version"
    )]
    TooFar {
        /// The current version.
        from: IstioVersion,
        /// The requested version.
        to: IstioVersion,
        /// How many minors ahead it is (always more than [`MAX_MINORS`]).
        minors: u32,
    },
    /// The target is older than the current version.
    #[error(
        "cannot upgrade from {from} to the older {to}: downgrades are done by rolling back to the old revision (moving workloads back to it), not by upgrading"
    )]
    Downgrade {
        /// The current version.
        from: IstioVersion,
        /// The requested, older version.
        to: IstioVersion,
    },
}

/// The most minors one upgrade may span, hop by hop or skipped. Istio ships about four minors a year (1.0 in
/// 2018, 1.28 in 2025), so a hundred minors is a quarter of a century of releases: a farther target is a
/// typo or a mis-read version (`1.4294967295.0` parses), not an upgrade. Refusing it before any hop is
/// listed also bounds the cost of a path: at most `MAX_MINORS` hops, whatever the input.
pub const MAX_MINORS: u32 = 100;

/// Checks that `to` is a forward upgrade of plausible distance from `from`, and returns the minor distance.
fn distance(from: &IstioVersion, to: &IstioVersion) -> Result<u32, PathError> {
    if from.major != to.major {
        return Err(PathError::MajorChange { from: from.clone(), to: to.clone() });
    }
    if to < from {
        return Err(PathError::Downgrade { from: from.clone(), to: to.clone() });
    }
    // `to >= from` within one major implies `to.minor >= from.minor`: the subtraction cannot wrap.
    let minors = to.minor - from.minor;
    if minors > MAX_MINORS {
        return Err(PathError::TooFar { from: from.clone(), to: to.clone(), minors });
    }
    Ok(minors)
}

/// How many hops [`upgrade_path`] gives, computed arithmetically (nothing is listed): 0 for equal versions,
/// 1 within a minor or with `allow_skip`, else `ceil(minor distance / step)`. Same refusals as
/// [`upgrade_path`].
pub fn hop_count(
    from: &IstioVersion,
    to: &IstioVersion,
    mode: UpgradeMode,
    allow_skip: bool,
) -> Result<usize, PathError> {
    let minors = distance(from, to)?;
    Ok(if from == to {
        0
    } else if allow_skip {
        1
    } else {
        // At most MAX_MINORS, so the conversion cannot fail on any platform Rust supports.
        usize::try_from(minors.div_ceil(mode.max_minors_per_hop()).max(1)).unwrap_or(usize::MAX)
    })
}

/// The supported hops from `from` to `to`.
///
/// Empty when the versions are equal; one hop within a minor (patches and pre-releases can always be
/// applied directly). Otherwise each hop advances the greatest number of minors `mode` allows, so the count
/// is minimal (`ceil(minor distance / step)`) and the result deterministic; only the last hop may be
/// shorter, and it ends exactly at `to`. With `allow_skip` a single hop straight to `to` is returned whatever
/// the distance: the caller has chosen to take responsibility for an unsupported jump. A target more than
/// [`MAX_MINORS`] ahead is refused ([`PathError::TooFar`]) with or without `allow_skip`, before any hop is
/// built, so a path never holds more than `MAX_MINORS` hops.
pub fn upgrade_path(
    from: &IstioVersion,
    to: &IstioVersion,
    mode: UpgradeMode,
    allow_skip: bool,
) -> Result<Vec<Hop>, PathError> {
    let count = hop_count(from, to, mode, allow_skip)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let step = mode.max_minors_per_hop();
    let mut hops = Vec::with_capacity(count);
    let mut current = from.clone();
    if !allow_skip {
        // `to.minor >= from.minor` (checked by `hop_count`), and `minor` only grows while it stays more than
        // `step` below `to.minor`, so neither the subtraction nor the addition can wrap.
        let mut minor = from.minor;
        while to.minor - minor > step {
            minor += step;
            let next = IstioVersion::minor_only(from.major, minor);
            hops.push(Hop { from: current, to: next.clone() });
            current = next;
        }
    }
    hops.push(Hop { from: current, to: to.clone() });
    debug_assert_eq!(hops.len(), count);
    Ok(hops)
}

/// Whether a proxy version is supported by a control-plane version, and if not, how far off it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Skew {
    /// Same minor, or the proxy is one minor behind.
    Supported,
    /// The proxy is more than one minor behind the control plane.
    ProxyTooOld {
        /// How many minors the proxy is behind (always at least 2).
        minors: u32,
    },
    /// The proxy is ahead of the control plane, which Istio never supports.
    ProxyNewerThanControlPlane {
        /// How many minors the proxy is ahead (always at least 1).
        minors: u32,
    },
    /// Different majors: no skew rule applies, so it is unsupported.
    DifferentMajor {
        /// The control plane's major.
        control_plane: u32,
        /// The proxy's major.
        proxy: u32,
    },
}

impl Skew {
    /// Whether this skew is within Istio's support window.
    pub const fn is_supported(self) -> bool {
        matches!(self, Self::Supported)
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Supported => f.write_str("supported"),
            Self::ProxyTooOld { minors } => {
                write!(f, "proxy is {minors} minors behind the control plane; at most 1 is supported")
            }
            Self::ProxyNewerThanControlPlane { minors } => {
                write!(f, "proxy is {minors} minor(s) ahead of the control plane; proxies must not be newer")
            }
            Self::DifferentMajor { control_plane, proxy } => {
                write!(f, "proxy major {proxy} differs from control plane major {control_plane}")
            }
        }
    }
}

/// The skew between a control plane and one of its proxies: supported iff the control plane is on the same
/// minor or one ahead. Patch and pre-release differences never matter.
pub fn proxy_supported(control_plane: &IstioVersion, proxy: &IstioVersion) -> Skew {
    if control_plane.major != proxy.major {
        return Skew::DifferentMajor { control_plane: control_plane.major, proxy: proxy.major };
    }
    match control_plane.minor.checked_sub(proxy.minor) {
        Some(0 | 1) => Skew::Supported,
        Some(behind) => Skew::ProxyTooOld { minors: behind },
        None => Skew::ProxyNewerThanControlPlane { minors: proxy.minor - control_plane.minor },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> IstioVersion {
        IstioVersion::parse(s).unwrap()
    }

    fn path(from: &str, to: &str, mode: UpgradeMode, allow_skip: bool) -> Vec<String> {
        upgrade_path(&v(from), &v(to), mode, allow_skip).unwrap().iter().map(Hop::to_string).collect()
    }

    #[test]
    fn revision_upgrades_skip_one_minor_per_hop() {
        use UpgradeMode::Revision;
        assert_eq!(path("1.9.7", "1.10.6", Revision, false), ["1.9.7 -> 1.10.6"]);
        assert_eq!(path("1.8.0", "1.10.6", Revision, false), ["1.8.0 -> 1.10.6"]);
        assert_eq!(path("1.8.0", "1.12.3", Revision, false), ["1.8.0 -> 1.10", "1.10 -> 1.12.3"]);
        assert_eq!(path("1.8.0", "1.11.0", Revision, false), ["1.8.0 -> 1.10", "1.10 -> 1.11.0"]);
        assert_eq!(path("1.10.0-rc.1", "1.10.0", Revision, false), ["1.10.0-rc.1 -> 1.10.0"]);
    }

    #[test]
    fn in_place_upgrades_go_one_minor_at_a_time() {
        use UpgradeMode::InPlace;
        assert_eq!(path("1.9.7", "1.11.0", InPlace, false), ["1.9.7 -> 1.10", "1.10 -> 1.11.0"]);
        assert_eq!(path("1.9.7", "1.9.9", InPlace, false), ["1.9.7 -> 1.9.9"]);
    }

    #[test]
    fn allow_skip_jumps_straight_to_the_target() {
        assert_eq!(path("1.6.0", "1.12.3", UpgradeMode::InPlace, true), ["1.6.0 -> 1.12.3"]);
        assert_eq!(path("1.6.0", "1.12.3", UpgradeMode::Revision, true), ["1.6.0 -> 1.12.3"]);
        assert!(upgrade_path(&v("1.9.7"), &v("1.9.7"), UpgradeMode::Revision, true).unwrap().is_empty());
    }

    #[test]
    fn same_version_downgrade_and_major_change() {
        assert!(upgrade_path(&v("1.9.7"), &v("1.9.7"), UpgradeMode::Revision, false).unwrap().is_empty());
        let down = upgrade_path(&v("1.10.6"), &v("1.9.7"), UpgradeMode::Revision, true).unwrap_err();
        assert!(matches!(down, PathError::Downgrade { .. }));
        assert!(down.to_string().contains("rolling back to the old revision"));
        let rc = upgrade_path(&v("1.10.0"), &v("1.10.0-rc.1"), UpgradeMode::InPlace, false);
        assert!(matches!(rc, Err(PathError::Downgrade { .. })));
        let major = upgrade_path(&v("1.24.0"), &v("2.0.0"), UpgradeMode::Revision, true);
        assert!(matches!(major, Err(PathError::MajorChange { .. })));
    }

    #[test]
    fn absurd_targets_are_refused_before_any_hop_is_listed() {
        let from = v("1.9.7");
        for mode in [UpgradeMode::InPlace, UpgradeMode::Revision] {
            for skip in [false, true] {
                let far = upgrade_path(&from, &v("1.4294967295.0"), mode, skip).unwrap_err();
                assert_eq!(
                    far,
                    PathError::TooFar { from: from.clone(), to: v("1.4294967295.0"), minors: 4_294_967_286 }
                );
                assert!(far.to_string().contains("4294967286 minors ahead"), "{far}");
                assert!(far.to_string().contains("check the target version"), "{far}");
                assert_eq!(hop_count(&from, &v("1.4294967295.0"), mode, skip), Err(far));
            }
        }
        // Exactly MAX_MINORS ahead is still planned; one more is not.
        let edge = IstioVersion::new(1, 9 + MAX_MINORS, 0);
        assert_eq!(upgrade_path(&from, &edge, UpgradeMode::InPlace, false).unwrap().len(), MAX_MINORS as usize);
        assert_eq!(upgrade_path(&from, &edge, UpgradeMode::Revision, false).unwrap().len(), 50);
        let beyond = IstioVersion::new(1, 10 + MAX_MINORS, 0);
        assert!(matches!(
            upgrade_path(&from, &beyond, UpgradeMode::Revision, true),
            Err(PathError::TooFar { minors, .. }) if minors == MAX_MINORS + 1
        ));
        // Downgrades and major changes keep their own errors, however far.
        assert!(matches!(
            upgrade_path(&v("1.900.0"), &from, UpgradeMode::Revision, false),
            Err(PathError::Downgrade { .. })
        ));
        assert!(matches!(
            upgrade_path(&from, &v("2.4294967295.0"), UpgradeMode::Revision, false),
            Err(PathError::MajorChange { .. })
        ));
    }

    #[test]
    fn mode_and_hop_serde() {
        assert_eq!(UpgradeMode::InPlace.to_string(), "in-place");
        assert_eq!(serde_json::to_string(&UpgradeMode::InPlace).unwrap(), "\"in-place\"");
        assert_eq!(serde_json::from_str::<UpgradeMode>("\"revision\"").unwrap(), UpgradeMode::Revision);
        let hop = Hop { from: v("1.8.0"), to: IstioVersion::minor_only(1, 10) };
        let json = serde_json::to_string(&hop).unwrap();
        assert_eq!(json, r#"{"from":"1.8.0","to":"1.10"}"#);
        assert_eq!(serde_json::from_str::<Hop>(&json).unwrap(), hop);
    }

    #[test]
    fn proxy_skew() {
        let skew = |cp: &str, proxy: &str| proxy_supported(&v(cp), &v(proxy));
        assert_eq!(skew("1.10.6", "1.10.0"), Skew::Supported);
        assert_eq!(skew("1.10.0", "1.10.6"), Skew::Supported, "patch differences never matter");
        assert_eq!(skew("1.10.6", "1.9.7"), Skew::Supported);
        assert_eq!(skew("1.11.0", "1.9.7"), Skew::ProxyTooOld { minors: 2 });
        assert_eq!(skew("1.9.7", "1.10.6"), Skew::ProxyNewerThanControlPlane { minors: 1 });
        assert_eq!(skew("2.0.0", "1.24.0"), Skew::DifferentMajor { control_plane: 2, proxy: 1 });
        assert!(skew("1.10.6", "1.9.7").is_supported());
        assert!(!skew("1.11.0", "1.9.7").is_supported());
        let json = serde_json::to_string(&Skew::ProxyTooOld { minors: 2 }).unwrap();
        assert_eq!(json, r#"{"kind":"proxy-too-old","minors":2}"#);
        assert_eq!(serde_json::to_string(&Skew::Supported).unwrap(), r#"{"kind":"supported"}"#);
        assert_eq!(serde_json::from_str::<Skew>(&json).unwrap(), Skew::ProxyTooOld { minors: 2 });
    }

    /// Versions in one major, small minors so paths stay short, any patch/pre-release shape.
    fn version() -> impl Strategy<Value = IstioVersion> {
        let pre = proptest::option::of("(rc|alpha|beta)\\.[0-9]{1,2}");
        (0u32..40, proptest::option::of(0u32..20), pre).prop_map(|(minor, patch, pre)| IstioVersion {
            major: 1,
            minor,
            patch,
            pre,
        })
    }

    fn mode() -> impl Strategy<Value = UpgradeMode> {
        prop_oneof![Just(UpgradeMode::InPlace), Just(UpgradeMode::Revision)]
    }

    proptest! {
        #[test]
        fn paths_are_contiguous_bounded_and_minimal(a in version(), b in version(), mode in mode()) {
            prop_assume!(a != b);
            let (from, to) = if a < b { (a, b) } else { (b, a) };
            let hops = upgrade_path(&from, &to, mode, false).unwrap();
            let step = mode.max_minors_per_hop();
            let distance = to.minor - from.minor;
            prop_assert_eq!(hops.len() as u32, distance.div_ceil(step).max(1));
            prop_assert_eq!(&hops[0].from, &from);
            prop_assert_eq!(&hops[hops.len() - 1].to, &to);
            for hop in &hops {
                prop_assert!(hop.from < hop.to, "{} does not go forward", hop);
                prop_assert!(hop.to.minor - hop.from.minor <= step, "{} is too long for {}", hop, mode);
            }
            for pair in hops.windows(2) {
                prop_assert_eq!(&pair[0].to, &pair[1].from);
            }
            prop_assert_eq!(hop_count(&from, &to, mode, false), Ok(hops.len()));
            prop_assert_eq!(hop_count(&from, &to, mode, true), Ok(1));
            let skip = upgrade_path(&from, &to, mode, true).unwrap();
            prop_assert_eq!(skip, vec![Hop { from, to }]);
        }

        /// Any minors at all, up to `u32::MAX`: the path is built only within `MAX_MINORS`, never holds more
        /// hops than that, and `hop_count` agrees with it.
        #[test]
        fn paths_stay_bounded_for_any_minor(
            a in any::<u32>(),
            b in any::<u32>(),
            near in 0u32..=2 * MAX_MINORS,
            mode in mode(),
            skip in any::<bool>(),
        ) {
            for (from, to) in [(a, b), (a, a.saturating_add(near))] {
                let (from, to) = (IstioVersion::new(1, from, 0), IstioVersion::new(1, to, 0));
                let path = upgrade_path(&from, &to, mode, skip);
                prop_assert_eq!(path.as_ref().map(Vec::len).map_err(Clone::clone), hop_count(&from, &to, mode, skip));
                match path {
                    Ok(hops) => {
                        prop_assert!(to.minor - from.minor <= MAX_MINORS);
                        prop_assert!(hops.len() <= MAX_MINORS as usize);
                    }
                    Err(PathError::TooFar { minors, .. }) => {
                        prop_assert!(minors > MAX_MINORS);
                        prop_assert_eq!(minors, to.minor - from.minor);
                    }
                    Err(e) => prop_assert!(matches!(e, PathError::Downgrade { .. }) && to < from, "{}", e),
                }
            }
        }

        #[test]
        fn downgrades_are_always_refused(a in version(), b in version(), mode in mode(), skip in any::<bool>()) {
            prop_assume!(a != b);
            let (old, new) = if a < b { (a, b) } else { (b, a) };
            let is_downgrade = matches!(upgrade_path(&new, &old, mode, skip), Err(PathError::Downgrade { .. }));
            prop_assert!(is_downgrade);
        }

        #[test]
        fn skew_matches_minor_distance(cp in version(), proxy in version()) {
            let behind = i64::from(cp.minor) - i64::from(proxy.minor);
            prop_assert_eq!(proxy_supported(&cp, &proxy).is_supported(), (0..=1).contains(&behind));
        }
    }
}
