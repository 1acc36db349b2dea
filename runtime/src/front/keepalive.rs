//! How long a server keeps the locks of a client it no longer hears.
//!
//! When the network between a holder and the server stops answering
//! without closing anything, each side learns it on its own. The holder
//! learns it from its checks (`CheckOptions::detection_bound`). The server
//! learns it only from its kernel, which by default probes a silent client
//! after two hours, and retransmits unacknowledged data for about fifteen
//! minutes; until then the backend lives and keeps every lock it holds.
//! pglock therefore sets, on the sessions it checks (a lease's and the lock
//! manager's), the server's TCP keepalives and `tcp_user_timeout` from the
//! same [`CheckOptions`], such that the server frees the locks only after
//! the holder has learned of the loss: no one can take a lock while its
//! old holder still believes it holds it.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use crate::front::loss::CheckOptions;
use crate::sql::statements::server_keepalive_sql;

impl CheckOptions {
    /// The longest a server keeps the locks of a [`Lease`](crate::Lease) or
    /// a [`LockManager`](crate::LockManager) checked this way once the
    /// network between them stops answering, counted from the last packet
    /// it received: 16 s for the default checks. pglock sets the server's
    /// TCP keepalives (`tcp_keepalives_idle`, `_interval`, `_count`) and,
    /// from PostgreSQL 12, `tcp_user_timeout` on those sessions so that it
    /// is at least [`detection_bound`](Self::detection_bound) plus one
    /// check interval (and 1 s to spare): the holder always learns of the
    /// loss before the server frees the lock for someone else. Linux takes
    /// at most 32,767 s for a keepalive's idle time and interval, so the
    /// server waits at most about 36 hours: checks whose detection bound
    /// comes near that lose the guarantee (the bound returned here says so,
    /// being then shorter than theirs).
    ///
    /// ```
    /// use std::time::Duration;
    /// use pglock_runtime::CheckOptions;
    ///
    /// let checks = CheckOptions::default();
    /// assert_eq!(checks.server_release_bound(), Duration::from_secs(16));
    /// assert!(checks.server_release_bound() >= checks.detection_bound() + Duration::from_secs(5));
    /// ```
    pub fn server_release_bound(&self) -> Duration {
        ServerKeepalive::for_checks(self).gives_up_after()
    }
}

/// The probes a server's kernel sends to a client gone silent, in the
/// whole seconds PostgreSQL's settings take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServerKeepalive {
    idle_s: u32,
    interval_s: u32,
    count: u32,
}

/// Probes sent before the server gives up on a silent client.
const PROBES: u32 = 3;

/// What the check's own round trip and the timers' granularity may add to
/// the holder's detection bound: the server waits this much longer.
const SLACK: Duration = Duration::from_secs(1);

/// The most seconds Linux takes for a keepalive's idle time or interval:
/// PostgreSQL accepts more, but the kernel refuses it, and the server then
/// keeps its own default (two hours) with no more than a line in its log.
const KERNEL_MAX_S: u32 = 32_767;

/// PostgreSQL 12, which added `tcp_user_timeout`.
const USER_TIMEOUT_SINCE: u32 = 120_000;

impl ServerKeepalive {
    /// The keepalives for a holder checked as `checks` says.
    ///
    /// The server's kernel counts from the last packet it received, which
    /// may be up to one check interval before the network failed; the
    /// holder learns of the failure at most `detection_bound` after it. So
    /// the server must wait `interval + detection_bound` (plus [`SLACK`])
    /// from its last packet. The first probe goes out after
    /// `detection_bound`, which a holder that checks every `interval` never
    /// leaves idle for: a healthy holder's connection is never probed.
    pub(crate) fn for_checks(checks: &CheckOptions) -> Self {
        let bound = checks.detection_bound();
        let wait = bound
            .saturating_add(checks.interval())
            .saturating_add(SLACK);
        let idle_s = whole_seconds(bound).clamp(1, KERNEL_MAX_S);
        let rest = wait.saturating_sub(Duration::from_secs(u64::from(idle_s)));
        let interval_s = whole_seconds(rest.div_f64(f64::from(PROBES))).clamp(1, KERNEL_MAX_S);
        Self {
            idle_s,
            interval_s,
            count: PROBES,
        }
    }

    /// How long after its last packet from a silent client the server ends
    /// the session: the last probe unanswered, or data unacknowledged.
    pub(crate) fn gives_up_after(&self) -> Duration {
        let probes = u64::from(self.interval_s) * u64::from(self.count);
        Duration::from_secs(u64::from(self.idle_s) + probes)
    }

    /// Sets them on `pg`'s session, with `tcp_user_timeout` where the
    /// server has it. The session keeps them: a lease's connection, handed
    /// back on release, keeps them too.
    pub(crate) async fn apply(&self, pg: &mut PgConnection) -> Result<(), sqlx::Error> {
        let sql = self.sql_for(pg);
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(pg).await?;
        Ok(())
    }

    /// The statements that set them on `pg`'s session, for a caller that
    /// sends them with others in one message.
    pub(crate) fn sql_for(&self, pg: &PgConnection) -> String {
        let user_timeout_ms = match pg.server_version_num() {
            Some(version) if version >= USER_TIMEOUT_SINCE => {
                let ms = self.gives_up_after().as_millis();
                Some(
                    u32::try_from(ms)
                        .unwrap_or(i32::MAX as u32)
                        .min(i32::MAX as u32),
                )
            }
            _ => None,
        };
        server_keepalive_sql(self.idle_s, self.interval_s, self.count, user_timeout_ms)
    }
}

/// `duration` in whole seconds, rounded up, within PostgreSQL's `int`.
fn whole_seconds(duration: Duration) -> u32 {
    let seconds = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    u32::try_from(seconds)
        .unwrap_or(u32::MAX)
        .min(i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keepalive(interval_ms: u64, timeout_ms: u64) -> ServerKeepalive {
        ServerKeepalive::for_checks(
            &CheckOptions::default()
                .check_every(Duration::from_millis(interval_ms))
                .check_timeout(Duration::from_millis(timeout_ms)),
        )
    }

    #[test]
    fn the_default_checks_give_a_server_that_waits_sixteen_seconds() {
        let keepalive = ServerKeepalive::for_checks(&CheckOptions::default());
        assert_eq!(
            keepalive,
            ServerKeepalive {
                idle_s: 10,
                interval_s: 2,
                count: 3
            }
        );
        assert_eq!(keepalive.gives_up_after(), Duration::from_secs(16));
    }

    #[test]
    fn the_server_waits_past_one_interval_and_the_detection_bound() {
        for (interval_ms, timeout_ms) in [
            (1, 1),
            (100, 200),
            (500, 1_000),
            (1_000, 1_000),
            (5_000, 5_000),
            (30_000, 2_000),
            (2_500, 60_000),
        ] {
            let checks = CheckOptions::default()
                .check_every(Duration::from_millis(interval_ms))
                .check_timeout(Duration::from_millis(timeout_ms));
            let keepalive = keepalive(interval_ms, timeout_ms);
            let needed = checks.detection_bound() + checks.interval() + SLACK;
            assert!(
                keepalive.gives_up_after() >= needed,
                "{checks:?}: {keepalive:?} gives up before {needed:?}"
            );
            // Never probed while the holder checks.
            assert!(Duration::from_secs(keepalive.idle_s.into()) >= checks.detection_bound());
        }
    }

    #[test]
    fn huge_checks_stay_within_the_settings_range() {
        let keepalive = ServerKeepalive::for_checks(
            &CheckOptions::default()
                .check_every(Duration::MAX)
                .check_timeout(Duration::MAX),
        );
        assert!(keepalive.idle_s <= KERNEL_MAX_S);
        assert!(keepalive.interval_s <= KERNEL_MAX_S);
    }
}
