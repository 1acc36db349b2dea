//! Several hosts, and the one that is the primary.
//!
//! sqlx connects to the one host of its connect options. After a failover
//! the primary is another host, so pglock takes a list of connect options
//! and connects to the first host, in order, that is a primary accepting
//! writes, as libpq's `target_session_attrs=read-write` does: not in
//! recovery, and `transaction_read_only` off. A
//! [`LockManager`](crate::LockManager) made with
//! [`with_hosts`](crate::LockManager::with_hosts) does so for every
//! connection it opens, so it serves again on the promoted server once its
//! guards have reported their loss; a leader does so with
//! [`connect_primary`] before each [`acquire_lease`](crate::SessionLock::acquire_lease).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::error::{Error, HostAnswer, HostTried};
use crate::sql::statements::PRIMARY_CHECK;

/// How long [`connect_primary`] gives each host to connect and answer: a
/// host that does not answer at all (a black hole) must not keep the next
/// ones from being tried. The default check timeout of leases and managers.
const HOST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the first of `hosts`, in order, that is a primary accepting
/// writes (`pg_is_in_recovery()` false, `transaction_read_only` off), as
/// libpq's `target_session_attrs=read-write` does; the connections to the
/// others are closed. Each host gets 5 s to connect and answer.
///
/// For a leader that holds a [`Lease`](crate::Lease): after a failover its
/// lease reports the loss, and the next round connects to the promoted
/// server.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{CheckOptions, Error, Namespace, connect_primary};
/// use sqlx::postgres::PgConnectOptions;
///
/// static LEADER: Namespace = Namespace::named("scheduler:leader");
///
/// # async fn lead() {}
/// # async fn run() -> Result<(), Error> {
/// let hosts: Vec<PgConnectOptions> = vec![
///     "postgres://app@db-a/app".parse()?,
///     "postgres://app@db-b/app".parse()?,
/// ];
/// loop {
///     let connection = match connect_primary(&hosts).await {
///         Ok(connection) => connection,
///         // A failover under way: no host is the primary yet.
///         Err(error) if error.is_retryable() => {
///             tokio::time::sleep(Duration::from_secs(1)).await;
///             continue;
///         }
///         Err(error) => return Err(error),
///     };
///     let mut lease = LEADER
///         .session_lock(&"cluster")
///         .acquire_lease(connection, CheckOptions::default())
///         .await?;
///     tokio::select! {
///         lost = lease.lost() => eprintln!("{lost}; electing again"),
///         () = lead() => break,
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::NoHosts`] for an empty list; [`Error::NoPrimary`], naming every
/// host and its answer, when none is a primary (retryable: a failover may
/// be under way).
pub async fn connect_primary(hosts: &[PgConnectOptions]) -> Result<PgConnection, Error> {
    Hosts::primary_of(hosts.iter().cloned())?
        .connect(HOST_TIMEOUT)
        .await
}

/// Where a lock manager connects: one host as given, or the primary among
/// several.
pub(crate) struct Hosts {
    list: Box<[PgConnectOptions]>,
    /// Whether a host must be the primary: the hosts of
    /// [`LockManager::with_hosts`](crate::LockManager::with_hosts). One
    /// host given to [`LockManager::new`](crate::LockManager::new) is used
    /// as it is, with no question asked: a standby refuses every lock with
    /// [`Error::Standby`] in the lock statement itself.
    primary_only: bool,
}

impl Hosts {
    /// One host, used as it is.
    pub(crate) fn one(options: PgConnectOptions) -> Self {
        Self {
            list: Box::new([options]),
            primary_only: false,
        }
    }

    /// The primary among `hosts`; [`Error::NoHosts`] when there is none.
    pub(crate) fn primary_of(
        hosts: impl IntoIterator<Item = PgConnectOptions>,
    ) -> Result<Self, Error> {
        let list: Box<[PgConnectOptions]> = hosts.into_iter().collect();
        if list.is_empty() {
            return Err(Error::NoHosts);
        }
        Ok(Self {
            list,
            primary_only: true,
        })
    }

    /// A new connection: to the one host, or to the first primary, each
    /// host within `per_host`.
    pub(crate) async fn connect(&self, per_host: Duration) -> Result<PgConnection, Error> {
        if !self.primary_only {
            let host = &self.list[0];
            return match tokio::time::timeout(per_host, host.connect()).await {
                Ok(connected) => connected.map_err(Error::from_sqlx),
                Err(_) => Err(Error::Database(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {per_host:?}"),
                )))),
            };
        }
        let mut tried = Vec::with_capacity(self.list.len());
        for host in &self.list {
            let answer = match tokio::time::timeout(per_host, ask(host)).await {
                Ok(Ok(primary)) => return Ok(primary),
                Ok(Err(answer)) => answer,
                Err(_) => HostAnswer::Unreachable(format!("no answer within {per_host:?}")),
            };
            tried.push(HostTried::new(name(host), host.get_port(), answer));
        }
        Err(Error::NoPrimary { tried })
    }
}

/// Connects to `host` and asks whether it is the primary: the connection
/// when it is, else what it answered (its connection closed).
async fn ask(host: &PgConnectOptions) -> Result<PgConnection, HostAnswer> {
    let unreachable = |error: sqlx::Error| HostAnswer::Unreachable(error.to_string());
    let mut pg = host.connect().await.map_err(unreachable)?;
    let answer = match sqlx::query_as::<_, (bool, bool)>(PRIMARY_CHECK)
        .fetch_one(&mut pg)
        .await
    {
        Ok((false, false)) => return Ok(pg),
        Ok((true, _)) => HostAnswer::Standby,
        Ok((false, true)) => HostAnswer::ReadOnly,
        Err(error) => unreachable(error),
    };
    let _ = pg.close().await;
    Err(answer)
}

/// How a host is named in an error: its unix socket's directory, or its
/// host name or address.
fn name(host: &PgConnectOptions) -> String {
    match host.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => host.get_host().to_owned(),
    }
}
