//! A network the server's kernel sees fail: a client in a network namespace
//! of its own, joined to this machine by a veth pair, whose link can be
//! taken down. Then nothing passes either way and nothing is closed: the
//! server's keepalive probes and retransmissions go unanswered, as behind
//! a dropped route or a frozen host. (A proxy in user space can't show
//! that: its kernel answers the server's probes.) Needs root and `ip`
//! (iproute2); [`Partition::create`] says why not otherwise.

use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pglock::testing::{ServerOptions, TestServer};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// A namespace for the client and the veth pair to it; removed when
/// dropped.
pub struct Partition {
    name: String,
    client_link: String,
    server_link: String,
    server_address: Ipv4Addr,
    client_address: Ipv4Addr,
}

impl Partition {
    /// A new namespace linked to this one, or why there can't be one (not
    /// root, no `ip`, no namespaces): the test is then skipped.
    pub fn create() -> Result<Partition, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root for a network namespace".to_owned());
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid & 0xff_ffff);
        // A /30 of 10.231.0.0/16 chosen by pid and count: two processes
        // could collide, which makes the address taken and the test skip.
        let block = (pid.wrapping_mul(7).wrapping_add(n * 4)) & 0x3fff;
        let base = u32::from(Ipv4Addr::new(10, 231, 0, 0)) | (block << 2);
        let partition = Partition {
            name: format!("pglock-{tag}"),
            client_link: format!("pgc{tag}"),
            server_link: format!("pgs{tag}"),
            server_address: Ipv4Addr::from(base + 1),
            client_address: Ipv4Addr::from(base + 2),
        };
        let server_link = partition.server_link.clone();
        let (ns, client) = (partition.name.as_str(), partition.client_link.as_str());
        let server_cidr = format!("{}/30", partition.server_address);
        let client_cidr = format!("{}/30", partition.client_address);
        // `partition` removes what was made if a step fails.
        ip(&["netns", "add", ns])?;
        let steps: [&[&str]; 8] = [
            &[
                "link",
                "add",
                &server_link,
                "type",
                "veth",
                "peer",
                "name",
                client,
            ],
            &["link", "set", client, "netns", ns],
            &["addr", "add", &server_cidr, "dev", &server_link],
            &["link", "set", &server_link, "up"],
            &["-n", ns, "addr", "add", &client_cidr, "dev", client],
            &["-n", ns, "link", "set", client, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            // The server side must have its address before a server binds it.
            &["-4", "addr", "show", "dev", &server_link],
        ];
        for step in steps {
            ip(step)?;
        }
        Ok(partition)
    }

    /// The address the server listens on, on this machine's end of the link.
    pub fn server_address(&self) -> Ipv4Addr {
        self.server_address
    }

    /// The client's address, for the server's `pg_hba.conf`.
    pub fn client_address(&self) -> Ipv4Addr {
        self.client_address
    }

    /// Moves the calling thread into the client's namespace until the
    /// returned value is dropped: the sockets it creates meanwhile are the
    /// client's, and keep their namespace after it leaves. A test on a
    /// current-thread runtime opens every connection on this thread.
    pub fn enter(&self) -> Entered {
        let home = File::open("/proc/thread-self/ns/net").expect("this thread's namespace");
        let client = File::open(format!("/run/netns/{}", self.name)).expect("the namespace");
        set_namespace(&client);
        Entered { home }
    }

    /// Takes the client's link down: from now on nothing passes in either
    /// direction, and neither side is told.
    pub fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.client_link, "down"]).expect("cut the link");
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // The pair first: a namespace whose name is removed lives on while
        // a socket of the client's still retransmits into it, and its end
        // of the pair with it.
        let _ = ip(&["link", "del", &self.server_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The calling thread in the client's namespace; back home when dropped.
pub struct Entered {
    home: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        set_namespace(&self.home);
    }
}

fn set_namespace(namespace: &File) {
    // SAFETY: a valid descriptor of a network namespace, for this thread.
    let done = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A private server that listens on `partition`'s link and trusts its
/// client, and a pool on it through its unix socket (which the link's
/// failure does not touch).
pub async fn serve(partition: &Partition) -> (TestServer, PgPool) {
    let options = ServerOptions::new().listen_also(partition.server_address().into());
    let server = TestServer::start(options).expect("a private server on the link");
    let pool = super::pool_on(&server, 4).await;
    let hba = server.data_dir().join("pg_hba.conf");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&hba)
        .expect("open pg_hba.conf");
    writeln!(file, "host all all {}/32 trust", partition.client_address())
        .expect("trust the client");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&pool)
        .await
        .expect("reload pg_hba.conf");
    (server, pool)
}

/// Connect options to `server` over `partition`'s link.
pub fn over_link(partition: &Partition, server: &TestServer) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&partition.server_address().to_string())
        .port(server.port())
        .username("postgres")
        .database("postgres")
        .ssl_mode(PgSslMode::Disable)
}

/// Runs `ip args`; the reason it failed otherwise.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("no `ip`: {error}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
