//! Istio versions, revision names, and the image tags they are read from.
//!
//! Istio's own tooling compares versions as strings in places, so `"1.10" < "1.9"`: exactly the wrong answer
//! at the minor boundaries a blue/green upgrade crosses. Everything here compares numerically. Revision
//! names are kept apart from versions because a revision is only a Kubernetes label value: it usually
//! encodes a version (`1-10-6`) but may just as well be `canary` or `prod` and encode nothing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The accepted grammar, repeated in every error because versions usually come from image tags in a
/// cluster, far from any place where the user could look the format up.
const EXPECTED: &str = "expected MAJOR.MINOR[.PATCH][-PRERELEASE], e.g. 1.10.6";

/// Kubernetes' limit on a DNS-1123 label, which is what a revision name must be.
const MAX_LABEL: usize = 63;

/// Tag suffixes that select an image flavour, not a version: `1.24.6-distroless` is release 1.24.6.
const VARIANT_SUFFIXES: [&str; 2] = ["-distroless", "-debug"];

/// Why a string is not an Istio version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Nothing to parse: typically an unset field or an image reference without a tag.
    #[error("an empty string is not an Istio version: {}", EXPECTED)]
    Empty,
    /// Whitespace anywhere. We do not trim, because padding means an upstream split went wrong.
    #[error("`{input}` is not an Istio version: it contains whitespace; {}", EXPECTED)]
    Whitespace {
        /// The rejected input.
        input: String,
    },
    /// Only one numeric part: a bare `1` names no minor line, and the minor line is what upgrades are about.
    #[error("`{input}` is not an Istio version: it needs at least MAJOR.MINOR; {}", EXPECTED)]
    MissingMinor {
        /// The rejected input.
        input: String,
    },
    /// More than MAJOR.MINOR.PATCH, e.g. `1.9.7.1`.
    #[error("`{input}` is not an Istio version: it has {parts} numeric parts, at most 3 are allowed; {}", EXPECTED)]
    TooManyParts {
        /// The rejected input.
        input: String,
        /// How many dot-separated parts were found before any `-`.
        parts: usize,
    },
    /// A numeric part that is empty or not all ASCII digits, e.g. the `x` in `1.x.7`.
    #[error("`{input}` is not an Istio version: `{part}` is not a number; {}", EXPECTED)]
    NotANumber {
        /// The rejected input.
        input: String,
        /// The offending part.
        part: String,
    },
    /// A numeric part with a leading zero (`01.9`). Istio never publishes these; a tag that has them is
    /// something else (a date, a build number), so rejecting it beats silently reading it as a version.
    #[error("`{input}` is not an Istio version: `{part}` has a leading zero; {}", EXPECTED)]
    LeadingZero {
        /// The rejected input.
        input: String,
        /// The offending part.
        part: String,
    },
    /// A numeric part too large for `u32`.
    #[error("`{input}` is not an Istio version: `{part}` is too large a number; {}", EXPECTED)]
    Overflow {
        /// The rejected input.
        input: String,
        /// The offending part.
        part: String,
    },
    /// A `-` with nothing after it, e.g. `1.10.0-`.
    #[error("`{input}` is not an Istio version: nothing follows the `-`; {}", EXPECTED)]
    EmptyPreRelease {
        /// The rejected input.
        input: String,
    },
    /// A pre-release with an empty identifier or a character outside `[0-9A-Za-z-]`, e.g. `1.10.0-rc..1`.
    #[error(
        "`{input}` is not an Istio version: pre-release `{pre}` must be dot-separated, non-empty identifiers of [0-9A-Za-z-]; {}",
        EXPECTED
    )]
    InvalidPreRelease {
        /// The rejected input.
        input: String,
        /// The pre-release part (after the first `-`).
        pre: String,
    },
}

/// An Istio version: `1.10.6`, `1.10.0-rc.1`, or a minor-only dev build such as `1.25-alpha.<sha>`.
///
/// Fields are public so callers can write the minor-line placeholder `IstioVersion { major: 1, minor: 10,
/// patch: None, pre: None }` (shown as `1.10`, read as "latest patch of 1.10") that upgrade paths use. A
/// hand-built `pre` should hold what [`IstioVersion::parse`] accepts, or `Display` will not round-trip.
///
/// Ordering is numeric and semver-like: `1.9.7 < 1.10.0`, `1.10.0-rc.1 < 1.10.0`, `rc.2 < rc.10`. A missing
/// patch sorts before every patch of its minor (`1.25-alpha.x < 1.25 < 1.25.0-rc.1 < 1.25.0`): a minor-only
/// dev build predates the minor's first release, so it behaves like an early pre-release of `.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IstioVersion {
    /// Major version; every Istio release so far is 1.
    pub major: u32,
    /// Minor version: the unit in which upgrade-path and proxy-skew rules are stated.
    pub minor: u32,
    /// Patch version; `None` for minor-only dev builds and minor-line placeholders.
    pub patch: Option<u32>,
    /// Pre-release identifiers without the leading `-`, e.g. `rc.1` or `alpha.<sha>`.
    pub pre: Option<String>,
}

impl IstioVersion {
    /// A plain release such as `1.10.6`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch: Some(patch), pre: None }
    }

    /// The minor-line placeholder `MAJOR.MINOR` ("latest patch of that minor"), as used for intermediate hops.
    pub const fn minor_only(major: u32, minor: u32) -> Self {
        Self { major, minor, patch: None, pre: None }
    }

    /// Parses `MAJOR.MINOR[.PATCH][-PRERELEASE]` with an optional leading `v`.
    ///
    /// Numeric parts reject leading zeros (see [`VersionError::LeadingZero`]). Pre-release identifiers do
    /// not: Istio dev builds end in a git sha, which can be all digits with a leading zero.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        if input.is_empty() {
            return Err(VersionError::Empty);
        }
        if input.chars().any(char::is_whitespace) {
            return Err(VersionError::Whitespace { input: input.to_owned() });
        }
        let body = input.strip_prefix('v').unwrap_or(input);
        let (core, pre) = match body.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (body, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let (major, minor, patch) = match parts.as_slice() {
            [major, minor] => (*major, *minor, None),
            [major, minor, patch] => (*major, *minor, Some(*patch)),
            [_] => return Err(VersionError::MissingMinor { input: input.to_owned() }),
            _ => return Err(VersionError::TooManyParts { input: input.to_owned(), parts: parts.len() }),
        };
        let pre = match pre {
            None => None,
            Some("") => return Err(VersionError::EmptyPreRelease { input: input.to_owned() }),
            Some(pre) if !valid_pre(pre) => {
                return Err(VersionError::InvalidPreRelease { input: input.to_owned(), pre: pre.to_owned() });
            }
            Some(pre) => Some(pre.to_owned()),
        };
        Ok(Self {
            major: number(input, major)?,
            minor: number(input, minor)?,
            patch: patch.map(|p| number(input, p)).transpose()?,
            pre,
        })
    }

    /// `(major, minor)`: the release line that compatibility rules talk about.
    pub const fn minor_line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Signed minor distance from `self` to `other` (positive when `other` is a later minor).
    ///
    /// `None` when the majors differ: minors of different majors are not comparable, and Istio has only
    /// ever shipped major 1, so a major change means bad input rather than a long upgrade.
    pub fn minors_between(&self, other: &IstioVersion) -> Option<i64> {
        (self.major == other.major).then(|| i64::from(other.minor) - i64::from(self.minor))
    }

    /// The conventional revision name for this version: `1.10.0-rc.1` becomes `1-10-0-rc-1`.
    ///
    /// Anything outside `[a-z0-9]` becomes `-`, and the result is cut to 63 characters with trailing dashes
    /// removed, so it is always a valid label. It starts with the major's digit, so it is never empty.
    pub fn revision(&self) -> Revision {
        let mut name: String = self
            .to_string()
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .collect();
        name.truncate(MAX_LABEL); // ASCII only, so any byte index is a char boundary.
        Revision(name.trim_end_matches('-').to_owned())
    }
}

/// Parses one numeric version part.
fn number(input: &str, part: &str) -> Result<u32, VersionError> {
    let err = |make: fn(String, String) -> VersionError| make(input.to_owned(), part.to_owned());
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(|input, part| VersionError::NotANumber { input, part }));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(err(|input, part| VersionError::LeadingZero { input, part }));
    }
    part.parse().map_err(|_| err(|input, part| VersionError::Overflow { input, part }))
}

fn valid_pre(pre: &str) -> bool {
    pre.split('.').all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Semver precedence for pre-release strings: identifier by identifier, numeric ones numerically and
/// before alphanumeric ones; if one is a prefix of the other, the shorter sorts first.
fn compare_pre(a: &str, b: &str) -> Ordering {
    a.split('.')
        .zip(b.split('.'))
        .map(|(x, y)| compare_identifier(x, y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.split('.').count().cmp(&b.split('.').count()))
}

fn compare_identifier(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (numeric(a), numeric(b)) {
        // Compare by magnitude without parsing (identifiers may exceed u64); break ties between `01` and `1`
        // on the raw text so that `Ordering::Equal` coincides with `==`.
        (true, true) => {
            let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

impl Ord for IstioVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.minor_line()
            .cmp(&other.minor_line())
            .then_with(|| self.patch.cmp(&other.patch)) // `None` first: see the type's docs.
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => compare_pre(a, b),
            })
    }
}

impl PartialOrd for IstioVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The canonical form: no `v`, patch and pre-release only when present.
impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(patch) = self.patch {
            write!(f, ".{patch}")?;
        }
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

impl FromStr for IstioVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for IstioVersion {
    type Error = VersionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IstioVersion> for String {
    fn from(v: IstioVersion) -> Self {
        v.to_string()
    }
}

/// Why a string is not a valid revision name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// Nothing to parse.
    #[error("an empty string is not a valid revision name: revisions are DNS-1123 labels, e.g. `1-10-6` or `canary`")]
    Empty,
    /// A version (`1.10.6`) where a revision was expected: the most common mistake, so it gets a suggestion.
    #[error(
        "`{input}` is not a valid revision name: revisions are DNS-1123 labels without dots; did you mean `{suggestion}`?"
    )]
    LooksLikeVersion {
        /// The rejected input.
        input: String,
        /// The revision conventionally used for that version.
        suggestion: String,
    },
    /// Uppercase letters, which Kubernetes labels of this kind do not allow.
    #[error(
        "`{input}` is not a valid revision name: revisions are lowercase DNS-1123 labels; did you mean `{suggestion}`?"
    )]
    Uppercase {
        /// The rejected input.
        input: String,
        /// The input lowercased, which is valid.
        suggestion: String,
    },
    /// Longer than the 63 characters of a DNS-1123 label.
    #[error(
        "`{input}` is not a valid revision name: it is {len} characters long; revisions are DNS-1123 labels of at most 63"
    )]
    TooLong {
        /// The rejected input.
        input: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character outside `[a-z0-9-]`.
    #[error(
        "`{input}` is not a valid revision name: {character:?} is not allowed; revisions are DNS-1123 labels (lowercase letters, digits and '-')"
    )]
    InvalidCharacter {
        /// The rejected input.
        input: String,
        /// The first offending character.
        character: char,
    },
    /// Starts or ends with `-`.
    #[error(
        "`{input}` is not a valid revision name: revisions are DNS-1123 labels, which start and end with a letter or digit"
    )]
    DashAtEdge {
        /// The rejected input.
        input: String,
    },
}

/// An Istio revision name (the `istio.io/rev` label value): a DNS-1123 label such as `1-10-6` or `canary`.
///
/// Always valid once constructed; deserialization validates too. Ordering is lexical and exists only for
/// stable output: compare the versions from [`Revision::as_version`] to order upgrades.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Revision(String);

impl Revision {
    /// Validates a revision name, suggesting the right spelling for the usual mistakes.
    pub fn parse(input: &str) -> Result<Self, RevisionError> {
        if input.is_empty() {
            return Err(RevisionError::Empty);
        }
        if input.contains('.')
            && let Ok(version) = IstioVersion::parse(input)
        {
            let suggestion = version.revision().0;
            return Err(RevisionError::LooksLikeVersion { input: input.to_owned(), suggestion });
        }
        let len = input.chars().count();
        if len > MAX_LABEL {
            return Err(RevisionError::TooLong { input: input.to_owned(), len });
        }
        if input.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = input.to_ascii_lowercase();
            if Self::parse(&lower).is_ok() {
                return Err(RevisionError::Uppercase { input: input.to_owned(), suggestion: lower });
            }
        }
        if let Some(character) = input.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
            return Err(RevisionError::InvalidCharacter { input: input.to_owned(), character });
        }
        if input.starts_with('-') || input.ends_with('-') {
            return Err(RevisionError::DashAtEdge { input: input.to_owned() });
        }
        Ok(Self(input.to_owned()))
    }

    /// `default`: the revision Istio assumes when none is named (`istio-injection=enabled`, in-place installs).
    pub fn default_revision() -> Self {
        Self(String::from("default"))
    }

    /// Whether this is the `default` revision, which namespaces reach without an `istio.io/rev` label.
    pub fn is_default(&self) -> bool {
        self.0 == "default"
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Best-effort reading of a version-shaped name, the inverse of [`IstioVersion::revision`].
    ///
    /// Up to three leading numeric segments are MAJOR.MINOR.PATCH (an optional leading `v` is skipped); the
    /// rest become dot-separated pre-release identifiers, so `1-10-0-rc-1` reads as `1.10.0-rc.1`. Exact for
    /// releases; pre-releases whose identifiers contained `-` or uppercase cannot be recovered. `canary`,
    /// `default` or `prod` give `None`.
    pub fn as_version(&self) -> Option<IstioVersion> {
        let name = self.0.strip_prefix('v').unwrap_or(&self.0);
        let (mut numbers, mut rest) = (Vec::with_capacity(3), Vec::new());
        for segment in name.split('-') {
            let numeric = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
            if rest.is_empty() && numbers.len() < 3 && numeric {
                numbers.push(segment);
            } else {
                rest.push(segment);
            }
        }
        if numbers.len() < 2 {
            return None;
        }
        let mut text = numbers.join(".");
        if !rest.is_empty() {
            text.push('-');
            text.push_str(&rest.join("."));
        }
        IstioVersion::parse(&text).ok()
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Revision {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Revision {
    type Err = RevisionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Revision {
    type Error = RevisionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Revision> for String {
    fn from(r: Revision) -> Self {
        r.0
    }
}

/// The last path element of an image reference with any digest dropped, tag still attached.
fn last_element(image: &str) -> &str {
    // Split off the digest first: it contains a ':' of its own (`@sha256:...`).
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    // Only look after the last '/', so a registry port (`localhost:5000/...`) is never taken for a tag.
    name.rsplit_once('/').map_or(name, |(_, last)| last)
}

/// The Istio version in an image reference's tag: `docker.io/istio/proxyv2:1.9.7` gives 1.9.7.
///
/// Flavour suffixes (`-distroless`, `-debug`) are stripped; any other suffix stays a pre-release. Returns
/// `None` without a tag (`auto`, a digest-only reference) or when the tag is not a version (`latest`). It
/// does not check that the image is an Istio one; see [`image_component`] for that.
pub fn version_from_image(image: &str) -> Option<IstioVersion> {
    let (_, mut tag) = last_element(image).rsplit_once(':')?;
    while let Some(stripped) = VARIANT_SUFFIXES.iter().find_map(|suffix| tag.strip_suffix(suffix)) {
        tag = stripped;
    }
    IstioVersion::parse(tag).ok()
}

/// The image's name without registry, repository path, tag or digest: `istio/pilot:1.9.7` gives `pilot`.
pub fn image_component(image: &str) -> Option<&str> {
    let last = last_element(image);
    let component = last.split_once(':').map_or(last, |(component, _)| component);
    (!component.is_empty()).then_some(component)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";

    fn v(s: &str) -> IstioVersion {
        IstioVersion::parse(s).unwrap()
    }

    fn rev(s: &str) -> Revision {
        Revision::parse(s).unwrap()
    }

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(v("1.9.7"), IstioVersion::new(1, 9, 7));
        assert_eq!(v("v1.9.7"), IstioVersion::new(1, 9, 7));
        assert_eq!(v("1.9"), IstioVersion::minor_only(1, 9));
        assert_eq!(v("0.8.0"), IstioVersion::new(0, 8, 0));
        let rc = v("1.10.0-rc.1");
        assert_eq!((rc.patch, rc.pre.as_deref()), (Some(0), Some("rc.1")));
        let alpha = v(&format!("1.25-alpha.{SHA}"));
        assert_eq!((alpha.minor_line(), alpha.patch), ((1, 25), None));
        assert_eq!(alpha.pre, Some(format!("alpha.{SHA}")));
        assert_eq!("1.10.6".parse::<IstioVersion>(), Ok(IstioVersion::new(1, 10, 6)));
        assert_eq!(v("1.9.7-rc.01").pre.as_deref(), Some("rc.01"), "pre-release ids may have leading zeros");
    }

    #[test]
    fn rejects_malformed_versions_with_typed_errors() {
        use VersionError::*;
        let err = |s: &str| IstioVersion::parse(s).unwrap_err();
        assert_eq!(err(""), Empty);
        assert!(matches!(err(" 1.9.7"), Whitespace { .. }));
        assert!(matches!(err("1.9 .7"), Whitespace { .. }));
        assert!(matches!(err("1"), MissingMinor { .. }));
        assert!(matches!(err("v"), MissingMinor { .. }));
        assert!(matches!(err("1.9.7.1"), TooManyParts { parts: 4, .. }));
        assert!(matches!(err("1.x.7"), NotANumber { part, .. } if part == "x"));
        assert!(matches!(err("1..7"), NotANumber { part, .. } if part.is_empty()));
        assert!(matches!(err("latest"), MissingMinor { .. }));
        assert!(matches!(err("1.9.7+build"), NotANumber { .. }));
        assert!(matches!(err("01.9"), LeadingZero { part, .. } if part == "01"));
        assert!(matches!(err("1.09.0"), LeadingZero { .. }));
        assert!(matches!(err("1.4294967296.0"), Overflow { .. }));
        assert!(matches!(err("1.10.0-"), EmptyPreRelease { .. }));
        assert!(matches!(err("1.10.0-rc..1"), InvalidPreRelease { .. }));
        assert!(matches!(err("1.10.0-rc_1"), InvalidPreRelease { .. }));
        assert_eq!(
            err("1.x.7").to_string(),
            "`1.x.7` is not an Istio version: `x` is not a number; expected MAJOR.MINOR[.PATCH][-PRERELEASE], e.g. 1.10.6"
        );
    }

    #[test]
    fn orders_numerically_and_semver_style() {
        assert!(v("1.10.0") > v("1.9.7"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("1.10.0-rc.1") < v("1.10.0"));
        assert!(v("1.10.0-rc.2") < v("1.10.0-rc.10"));
        assert!(v("1.10.0-alpha") < v("1.10.0-alpha.1"));
        assert!(v("1.10.0-rc.1") < v("1.10.0-rc.a"), "numeric identifiers sort before alphanumeric ones");
        assert!(v(&format!("1.25-alpha.{SHA}")) < v("1.25.0-rc.0"));
        assert!(v(&format!("1.25-alpha.{SHA}")) < v("1.25.0"));
        assert!(v(&format!("1.25-alpha.{SHA}")) > v("1.24.9"));
        assert!(v("1.25") < v("1.25.0"));
        assert_ne!(v("1.9.7-rc.01").cmp(&v("1.9.7-rc.1")), Ordering::Equal, "Ord agrees with Eq");
    }

    #[test]
    fn display_is_canonical_and_minor_helpers() {
        assert_eq!(v("v1.9.7").to_string(), "1.9.7");
        assert_eq!(v("1.10.0-rc.1").to_string(), "1.10.0-rc.1");
        assert_eq!(IstioVersion::minor_only(1, 12).to_string(), "1.12");
        assert_eq!(v("1.9.7").minors_between(&v("1.11.0")), Some(2));
        assert_eq!(v("1.11.0").minors_between(&v("1.9.7")), Some(-2));
        assert_eq!(v("1.9.7").minors_between(&v("2.0.0")), None);
    }

    #[test]
    fn versions_serialize_as_strings_and_validate() {
        assert_eq!(serde_json::to_string(&v("1.10.0-rc.1")).unwrap(), "\"1.10.0-rc.1\"");
        assert_eq!(serde_json::from_str::<IstioVersion>("\"v1.9.7\"").unwrap(), v("1.9.7"));
        assert!(serde_json::from_str::<IstioVersion>("\"1.x\"").is_err());
    }

    #[test]
    fn revisions_validate_with_helpful_errors() {
        use RevisionError::*;
        let err = |s: &str| Revision::parse(s).unwrap_err();
        for ok in ["1-9-7", "canary", "default", "a", "1-10-0-rc-1", &"a".repeat(63)] {
            assert_eq!(rev(ok).as_str(), ok);
        }
        assert_eq!(err(""), Empty);
        assert_eq!(
            err("1.10.6").to_string(),
            "`1.10.6` is not a valid revision name: revisions are DNS-1123 labels without dots; did you mean `1-10-6`?"
        );
        assert!(matches!(err("Canary"), Uppercase { suggestion, .. } if suggestion == "canary"));
        assert!(matches!(err(&"a".repeat(64)), TooLong { len: 64, .. }));
        assert!(matches!(err("a.b"), InvalidCharacter { character: '.', .. }));
        assert!(matches!(err("can ary"), InvalidCharacter { character: ' ', .. }));
        assert!(matches!(err("Can_ary"), InvalidCharacter { character: 'C', .. }));
        assert!(matches!(err("-canary"), DashAtEdge { .. }));
        assert!(matches!(err("canary-"), DashAtEdge { .. }));
    }

    #[test]
    fn revision_basics_and_serde() {
        assert!(Revision::default_revision().is_default());
        assert_eq!(Revision::default_revision(), rev("default"));
        assert!(!rev("canary").is_default());
        assert_eq!(rev("canary").to_string(), "canary");
        assert_eq!(rev("canary").as_ref(), "canary");
        assert_eq!(serde_json::to_string(&rev("1-9-7")).unwrap(), "\"1-9-7\"");
        assert_eq!(serde_json::from_str::<Revision>("\"canary\"").unwrap(), rev("canary"));
        assert!(serde_json::from_str::<Revision>("\"1.9.7\"").is_err());
    }

    #[test]
    fn revisions_map_to_and_from_versions() {
        assert_eq!(v("1.9.7").revision(), rev("1-9-7"));
        assert_eq!(v("1.10.0-rc.1").revision(), rev("1-10-0-rc-1"));
        assert_eq!(v("1.10.0-RC.1").revision(), rev("1-10-0-rc-1"));
        let long = IstioVersion { pre: Some(format!("alpha.{SHA}.{SHA}")), ..IstioVersion::minor_only(1, 25) };
        assert!(long.revision().as_str().len() <= 63);
        assert_eq!(rev("1-9-7").as_version(), Some(v("1.9.7")));
        assert_eq!(rev("v1-9-7").as_version(), Some(v("1.9.7")));
        assert_eq!(rev("1-10").as_version(), Some(v("1.10")));
        assert_eq!(rev("1-10-0-rc-1").as_version(), Some(v("1.10.0-rc.1")));
        assert_eq!(rev(&format!("1-25-alpha-{SHA}")).as_version(), Some(v(&format!("1.25-alpha.{SHA}"))));
        for none in ["canary", "default", "prod", "1", "1-x", "2024-01", "1-9--rc"] {
            assert_eq!(rev(none).as_version(), None, "{none}");
        }
    }

    #[test]
    fn versions_from_image_references() {
        let from = |s: &str| version_from_image(s).map(|v| v.to_string());
        assert_eq!(from("docker.io/istio/proxyv2:1.9.7").as_deref(), Some("1.9.7"));
        assert_eq!(from("gcr.io/istio-release/pilot:1.24.6-distroless").as_deref(), Some("1.24.6"));
        assert_eq!(from("istio/proxyv2:1.24.6-debug").as_deref(), Some("1.24.6"));
        assert_eq!(from("localhost:5000/istio/proxyv2:1.10.6").as_deref(), Some("1.10.6"));
        assert_eq!(from("istio/proxyv2:1.10.0-rc.1").as_deref(), Some("1.10.0-rc.1"));
        assert_eq!(from("istio/proxyv2:1.9.7@sha256:abcdef").as_deref(), Some("1.9.7"));
        assert_eq!(from("docker.io/istio/proxyv2@sha256:abcdef"), None);
        assert_eq!(from("localhost:5000/istio/proxyv2"), None);
        assert_eq!(from("auto"), None);
        assert_eq!(from("proxyv2:latest"), None);
        assert_eq!(from(""), None);
        assert_eq!(from("proxyv2:"), None);
    }

    #[test]
    fn image_components() {
        assert_eq!(image_component("docker.io/istio/proxyv2:1.9.7"), Some("proxyv2"));
        assert_eq!(image_component("istio/pilot:1.9.7"), Some("pilot"));
        assert_eq!(image_component("localhost:5000/istio/pilot@sha256:abc"), Some("pilot"));
        assert_eq!(image_component("proxyv2"), Some("proxyv2"));
        assert_eq!(image_component("auto"), Some("auto"));
        assert_eq!(image_component(""), None);
        assert_eq!(image_component("istio/"), None);
    }

    fn pre() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop::collection::vec("[0-9A-Za-z-]{1,6}", 1..4).prop_map(|ids| ids.join(".")))
    }

    fn any_version() -> impl Strategy<Value = IstioVersion> {
        (any::<u32>(), any::<u32>(), proptest::option::of(any::<u32>()), pre())
            .prop_map(|(major, minor, patch, pre)| IstioVersion { major, minor, patch, pre })
    }

    fn release() -> impl Strategy<Value = IstioVersion> {
        (any::<u32>(), any::<u32>(), proptest::option::of(any::<u32>()))
            .prop_map(|(major, minor, patch)| IstioVersion { major, minor, patch, pre: None })
    }

    proptest! {
        #[test]
        fn display_round_trips(version in any_version()) {
            prop_assert_eq!(IstioVersion::parse(&version.to_string()), Ok(version));
        }

        #[test]
        fn ordering_is_total_and_consistent_with_eq(a in any_version(), b in any_version()) {
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
        }

        #[test]
        fn releases_order_like_their_numbers(a in release(), b in release()) {
            prop_assert_eq!(a.cmp(&b), (a.major, a.minor, a.patch).cmp(&(b.major, b.minor, b.patch)));
        }

        #[test]
        fn revisions_are_valid_and_releases_round_trip(version in any_version()) {
            let revision = version.revision();
            prop_assert_eq!(Revision::parse(revision.as_str()), Ok(revision.clone()));
            if version.pre.is_none() {
                prop_assert_eq!(revision.as_version(), Some(version));
            }
        }
    }
}
