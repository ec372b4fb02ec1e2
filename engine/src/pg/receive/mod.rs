//! `cairn pg receive`: WAL streamed into the repository over the
//! physical replication protocol, durable while its segment is still
//! being written, so that the recovery point is the last commit received.
//!
//! # What one session does
//! 1. `IDENTIFY_SYSTEM`: the server's system identifier must be the
//!    stanza's (a stanza without a record gets one from the first
//!    segment's long page header, as `wal push` writes it).
//! 2. The physical slot, created when asked (one that exists is kept), so
//!    the server keeps the WAL the receiver has not confirmed.
//! 3. `START_REPLICATION` from where the repository ends for its newest
//!    timeline ([`crate::wal::stream::resume_point`]): inside a streamed
//!    segment, at the end of the newest whole segment, or, for an empty
//!    stanza, at the start of the server's current segment. After a
//!    reconnect it goes on from what it holds in memory.
//! 4. WAL is appended to the segment being received
//!    ([`StreamSegment`]); a full segment is stored as `wal push` would
//!    store it. What has arrived is made durable as the segment's
//!    `.stream` manifest at least every `flush_interval`, whenever the
//!    server asks for a reply, and, with `synchronous`, as soon as no more
//!    WAL is waiting on the socket (so commits waiting for this standby are
//!    released a flush later; flushes batch whatever arrived meanwhile).
//! 5. Standby status updates report the write position (received) and the
//!    flush position (durable in the repository), never more.
//! 6. The end of a timeline (`CopyDone` and the next timeline's start):
//!    the segment is made durable, the next timeline's history file is
//!    stored (`TIMELINE_HISTORY`), and streaming goes on from the start of
//!    the switch segment on the new timeline.
//!
//! A lost connection, or a flush the repository refused for a passing
//! reason, is retried with backoff (1 s doubling to
//! `max_backoff`); refusals (another cluster, a conflicting segment,
//! damaged WAL, authentication) end the receiver. A stop request
//! ([`ReceiveOptions`], set on SIGTERM/SIGINT by the CLI) makes what
//! has arrived durable and reports it before returning.

mod protocol;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_formats::pg::{SegmentName, SegmentSize};
use serde::Serialize;

use crate::pg::replication::ConnInfo;
use crate::repo::Repository;
use crate::wal::stream::{self, StreamResume, StreamSegment};
use crate::{Error, Result};
use session::{Event, Session, Started};

/// How to receive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// The physical replication slot to stream from.
    pub slot: Option<String>,
    /// Create the slot first (an existing one is kept).
    pub create_slot: bool,
    /// Flush as soon as no more WAL is waiting, so the receiver can be a
    /// synchronous standby.
    pub synchronous: bool,
    /// The longest received WAL waits before it is made durable.
    pub flush_interval: Duration,
    /// The longest between two status updates.
    pub status_interval: Duration,
    /// Connection and read timeout.
    pub timeout: Duration,
    /// The longest wait between two connection attempts.
    pub max_backoff: Duration,
    /// zstd level of the stored pieces.
    pub compression_level: i32,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            slot: None,
            create_slot: false,
            synchronous: false,
            flush_interval: Duration::from_secs(1),
            status_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            max_backoff: Duration::from_secs(30),
            compression_level: crate::wal::push::DEFAULT_WAL_COMPRESSION_LEVEL,
        }
    }
}

impl ReceiveOptions {
    /// Streams from `slot`, creating it when `create` is set.
    pub fn with_slot(mut self, slot: Option<String>, create: bool) -> Self {
        self.slot = slot;
        self.create_slot = create;
        self
    }

    /// Acts as a synchronous standby (see [`ReceiveOptions::synchronous`]).
    pub fn synchronous(mut self, on: bool) -> Self {
        self.synchronous = on;
        self
    }

    /// Sets the flush interval.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }
}

/// What a receiver did, reported when it stops.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiveReport {
    /// The stanza.
    pub stanza: String,
    /// The timeline last streamed.
    pub timeline: u32,
    /// Bytes of WAL received.
    pub received_bytes: u64,
    /// Bytes uploaded (packs and manifests).
    pub stored_bytes: u64,
    /// Whole segments stored.
    pub segments: u64,
    /// `.stream` manifests written.
    pub flushes: u64,
    /// Appends to a segment's journal (`--synchronous`, local repository).
    pub journal_appends: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Everything before this position is durable in the repository.
    pub durable_lsn: String,
    /// The slowest flush, in seconds.
    pub max_flush_s: f64,
}

/// The receiver's state across connections.
struct Receiver<'a> {
    repo: &'a Repository,
    stanza: &'a str,
    ci: &'a ConnInfo,
    opts: &'a ReceiveOptions,
    stop: &'a AtomicBool,
    size: Option<SegmentSize>,
    seg: Option<StreamSegment>,
    stanza_recorded: bool,
    durable_lsn: u64,
    /// Where the server last said its WAL ends (0: not said yet).
    server_end: u64,
    /// When the `.stream` manifest was last written.
    manifest_at: Instant,
    report: ReceiveReport,
}

/// How a streaming run ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// The timeline ended; the next begins at `start`.
    Timeline { next: u32, start: u64 },
    /// The server ended the stream.
    Server,
}

/// Receives WAL from the server `ci` names into `stanza` until `stop` is
/// set (then returns with what it received durable) or a refusal ends it.
pub async fn receive(
    repo: &Repository,
    stanza: &str,
    ci: &ConnInfo,
    opts: &ReceiveOptions,
    stop: &AtomicBool,
) -> Result<ReceiveReport> {
    crate::wal::validate_stanza(stanza)?;
    let mut r = Receiver {
        repo,
        stanza,
        ci,
        opts,
        stop,
        size: None,
        seg: None,
        stanza_recorded: false,
        durable_lsn: 0,
        server_end: 0,
        manifest_at: Instant::now(),
        report: ReceiveReport { stanza: stanza.to_string(), ..ReceiveReport::default() },
    };
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        if !first {
            r.report.reconnects += 1;
        }
        first = false;
        let before = r.report.received_bytes;
        match r.connection().await {
            Ok(()) => {}
            Err(e) if fatal(&e) => {
                let _ = r.flush_manifest().await;
                if diverged_or_gone(&e) {
                    tracing::error!(
                        stanza,
                        "the server cannot continue from the repository's position: either the repository holds WAL \
                         the server's history does not (a failover to a standby that was behind), or the server no \
                         longer has WAL the repository needs (use a slot); the receiver never skips or rewrites WAL \
                         on its own — see `cairn wal show`"
                    );
                }
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(stanza, error = %e, "replication stopped; reconnecting in {backoff:?}");
                // What arrived stays in memory until a flush succeeds (the
                // server was told only what is durable): a repository that
                // cannot be written now is retried with the connection.
                match r.flush_manifest().await {
                    Ok(()) => {}
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => tracing::warn!(stanza, error = %e, "storing what was received failed; retrying"),
                }
                if r.report.received_bytes > before {
                    backoff = Duration::from_secs(1);
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
    r.flush_manifest().await?;
    if let Some(seg) = r.seg.as_mut() {
        blocking(|| seg.close_journal())?;
    }
    r.report.durable_lsn = protocol::lsn_text(r.durable_lsn);
    Ok(r.report)
}

/// The server's answers to `START_REPLICATION` that say the stream
/// cannot continue from where the repository is: WAL that diverged from
/// the server's history (after a failover), or WAL the server removed.
/// Retrying would loop for ever, and with a synchronous standby every
/// commit would wait meanwhile.
fn diverged_or_gone(e: &Error) -> bool {
    matches!(e, Error::Server { message, .. }
        if message.contains("not in this server's history")
            || message.contains("is ahead of the WAL flush position")
            || message.contains("has already been removed"))
}

/// Errors no reconnect can cure.
fn fatal(e: &Error) -> bool {
    diverged_or_gone(e)
        || matches!(
            e,
            Error::Conflict { .. }
                | Error::Corrupt { .. }
                | Error::AuthFailed { .. }
                | Error::Config(_)
                | Error::InvalidInput(_)
                | Error::WrongKey { .. }
                | Error::UnknownStanza { .. }
                | Error::Internal(_)
        )
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Receiver<'_> {
    /// One connection, from connecting to its end.
    async fn connection(&mut self) -> Result<()> {
        let (ci, timeout) = (self.ci, self.opts.timeout);
        let mut s = blocking(|| Session::connect(ci, timeout))?;
        let r = self.stream_on(&mut s).await;
        blocking(|| s.close());
        r
    }

    async fn stream_on(&mut self, s: &mut Session) -> Result<()> {
        let sys = blocking(|| s.identify())?;
        let record = stream::stanza(self.repo, self.stanza).await?;
        if let Some(rec) = &record {
            if rec.system_id != sys.system_id {
                return Err(Error::conflict(
                    s.server(),
                    format!(
                        "the server's system identifier is {}, but stanza {:?} belongs to cluster {}: refusing to receive another cluster's WAL",
                        sys.system_id, self.stanza, rec.system_id
                    ),
                ));
            }
            self.stanza_recorded = true;
        }
        let size = match (self.size, &record) {
            (Some(z), _) => z,
            (None, Some(rec)) => seg_size(u64::from(rec.segment_size))?,
            (None, None) => seg_size(blocking(|| s.segment_size())?)?,
        };
        self.size = Some(size);
        if let (Some(slot), true) = (&self.opts.slot, self.opts.create_slot) {
            if blocking(|| s.create_slot(slot))? {
                tracing::info!(slot, "created physical replication slot");
            }
        }
        if self.seg.is_none() {
            self.seg = Some(self.resume(size, sys.timeline, sys.xlogpos).await?);
        }
        // The server's timeline as this session knows it: a switch followed
        // on this connection (a standby promoted under it) makes it newer
        // than what `IDENTIFY_SYSTEM` said.
        let mut server_tli = sys.timeline;
        loop {
            let seg = self.seg.as_ref().expect("a segment is open");
            let (tli, at) = (seg.name().timeline, seg.received_lsn());
            if tli > server_tli {
                return Err(Error::conflict(
                    format!("stanza {:?}", self.stanza),
                    format!(
                        "it holds WAL of timeline {tli}, newer than the server's timeline {server_tli}: refusing to stream an older history"
                    ),
                ));
            }
            self.report.timeline = tli;
            tracing::info!(server = s.server(), timeline = tli, at = %protocol::lsn_text(at), "starting replication");
            let slot = self.opts.slot.as_deref();
            let ended = match blocking(|| s.start(slot, tli, at))? {
                Started::TimelineEnd { next, start } => Ended::Timeline { next, start },
                Started::Streaming => self.stream(s).await?,
            };
            match ended {
                Ended::Stopped => return Ok(()),
                Ended::Server => {
                    return Err(Error::connection(
                        s.server(),
                        "streaming",
                        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the server ended streaming"),
                    ))
                }
                Ended::Timeline { next, start } => {
                    self.switch(s, size, next, start).await?;
                    server_tli = server_tli.max(next);
                }
            }
        }
    }

    /// Where to begin when nothing is held in memory.
    async fn resume(&mut self, size: SegmentSize, server_tli: u32, server_pos: u64) -> Result<StreamSegment> {
        let level = self.opts.compression_level;
        Ok(match stream::resume_point(self.repo, self.stanza, size).await? {
            StreamResume::Nothing => {
                let name = SegmentName::containing(server_tli, cairn_formats::pg::Lsn(server_pos), size);
                StreamSegment::new(self.stanza, name, size, level)
            }
            StreamResume::After(n) => {
                let next = SegmentName { timeline: n.timeline, segno: n.segno + 1 };
                self.durable_lsn = next.start_lsn(size).map_or(0, |l| l.0);
                StreamSegment::new(self.stanza, next, size, level)
            }
            StreamResume::InStream(n) => match StreamSegment::resume(self.repo, self.stanza, n, size, level).await? {
                Some(seg) => {
                    self.durable_lsn = seg.durable_lsn();
                    seg
                }
                None => StreamSegment::new(self.stanza, n, size, level),
            },
        })
    }

    /// Follows the server to timeline `next`, which begins at `start`.
    async fn switch(&mut self, s: &mut Session, size: SegmentSize, next: u32, start: u64) -> Result<()> {
        self.flush_manifest().await?;
        if let Some(seg) = self.seg.as_mut() {
            blocking(|| seg.close_journal())?;
        }
        let (_, content) = blocking(|| s.timeline_history(next))?;
        stream::store_history(self.repo, self.stanza, next, &content).await?;
        let name = SegmentName::containing(next, cairn_formats::pg::Lsn(start), size);
        tracing::info!(timeline = next, at = %protocol::lsn_text(start), "following a timeline switch");
        self.seg = Some(StreamSegment::new(self.stanza, name, size, self.opts.compression_level));
        Ok(())
    }

    /// Streams until the stream ends or a stop is asked for.
    async fn stream(&mut self, s: &mut Session) -> Result<Ended> {
        let mut last_flush = Instant::now();
        let mut last_status = Instant::now();
        let mut reported = (0u64, 0u64);
        let mut reply = false;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.flush_manifest().await?;
                let (w, f) = (self.write_lsn(), self.durable_lsn);
                blocking(|| s.status(w, f, false))?;
                return Ok(Ended::Stopped);
            }
            // Everything already here, in a batch bounded so that a
            // synchronous standby still flushes under a constant stream.
            let batch_start = Instant::now();
            let mut batch = 0usize;
            while blocking(|| s.has_input()) {
                let ev = blocking(|| s.next(Duration::from_millis(50)))?;
                match ev {
                    None => break,
                    Some(ev) => {
                        if let Some(end) = self.handle(ev, &mut reply, &mut batch).await? {
                            return Ok(end);
                        }
                    }
                }
                if batch >= (4 << 20) || (self.opts.synchronous && batch_start.elapsed() >= Duration::from_millis(20)) {
                    break;
                }
            }
            let unflushed = self.seg.as_ref().is_some_and(|g| g.has_unflushed());
            if unflushed && (self.opts.synchronous || reply || last_flush.elapsed() >= self.opts.flush_interval) {
                self.flush().await?;
                last_flush = Instant::now();
            }
            // Journaled bytes reach the `.stream` manifest every flush interval.
            let unmanifested = self.seg.as_ref().is_some_and(|g| g.has_unmanifested());
            if unmanifested && self.manifest_at.elapsed() >= self.opts.flush_interval {
                self.flush_manifest().await?;
            }
            // A heartbeat: everything the server has is durable and nothing
            // came for a status interval, so the `.stream` manifest is written
            // again; its date tells `status` the repository was current then
            // (the receive lag of an idle server stays small).
            let caught_up = self.server_end != 0 && self.durable_lsn >= self.server_end;
            if caught_up && self.manifest_at.elapsed() >= self.opts.status_interval {
                if let Some(seg) = self.seg.as_mut() {
                    seg.touch(self.repo).await?;
                }
                self.manifest_at = Instant::now();
            }
            let now = (self.write_lsn(), self.durable_lsn);
            if reply || now != reported || last_status.elapsed() >= self.opts.status_interval {
                blocking(|| s.status(now.0, now.1, false))?;
                reported = now;
                last_status = Instant::now();
                reply = false;
            }
            // Then wait for more, no longer than the next flush or status.
            let mut wait = self.opts.status_interval.saturating_sub(last_status.elapsed());
            if self.seg.as_ref().is_some_and(|g| g.has_unflushed()) {
                wait = wait.min(self.opts.flush_interval.saturating_sub(last_flush.elapsed()));
            }
            if self.seg.as_ref().is_some_and(|g| g.has_unmanifested()) {
                wait = wait.min(self.opts.flush_interval.saturating_sub(self.manifest_at.elapsed()));
            }
            let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(200));
            if let Some(ev) = blocking(|| s.next(wait))? {
                if let Some(end) = self.handle(ev, &mut reply, &mut batch).await? {
                    return Ok(end);
                }
            }
        }
    }

    fn received_lsn(&self) -> u64 {
        self.seg.as_ref().map_or(self.durable_lsn, |g| g.received_lsn())
    }

    /// The write position reported to the server. A synchronous standby's
    /// write position releases commits under `synchronous_commit =
    /// remote_write`, and bytes only in this process's memory would die
    /// with it: with `--synchronous` it is the durable position, like the
    /// flush position. Otherwise it is what has been received.
    fn write_lsn(&self) -> u64 {
        if self.opts.synchronous {
            self.durable_lsn
        } else {
            self.received_lsn()
        }
    }

    /// One event; `Some` when the stream ended.
    async fn handle(&mut self, ev: Event, reply: &mut bool, batch: &mut usize) -> Result<Option<Ended>> {
        match ev {
            Event::Keepalive { server_end, reply: r } => {
                *reply |= r;
                self.server_end = self.server_end.max(server_end);
            }
            Event::TimelineEnd { next, start } => return Ok(Some(Ended::Timeline { next, start })),
            Event::Ended => return Ok(Some(Ended::Server)),
            Event::Data { start, server_end, data } => {
                self.server_end = self.server_end.max(server_end);
                *batch += data.len();
                self.report.received_bytes += data.len() as u64;
                self.append(start, &data).await?;
            }
        }
        Ok(None)
    }

    /// Appends WAL that begins at `start`, storing each segment it fills.
    async fn append(&mut self, start: u64, mut data: &[u8]) -> Result<()> {
        let size = self.size.expect("size known before streaming");
        let seg = self.seg.as_mut().expect("a segment is open");
        let at = seg.received_lsn();
        if start > at {
            return Err(Error::Protocol {
                server: self.ci.server_name(),
                detail: format!(
                    "WAL from {} received where {} was expected (a gap)",
                    protocol::lsn_text(start),
                    protocol::lsn_text(at)
                ),
            });
        }
        // Bytes already held (a server resending) are skipped.
        let skip = ((at - start) as usize).min(data.len());
        data = &data[skip..];
        while !data.is_empty() {
            let seg = self.seg.as_mut().expect("a segment is open");
            let n = seg.room().min(data.len());
            let name = seg.name();
            seg.append(&data[..n]).map_err(|e| Error::corrupt(name.format(size), None, e.to_string()))?;
            data = &data[n..];
            self.record_stanza().await?;
            if self.seg.as_ref().is_some_and(|g| g.is_full()) {
                let full = self.seg.take().expect("a segment is open");
                let next = SegmentName { timeline: name.timeline, segno: name.segno + 1 };
                let end = full.received_lsn();
                let f = full.complete(self.repo).await?;
                self.report.segments += 1;
                self.report.stored_bytes += f.stored_bytes;
                self.durable_lsn = end;
                self.seg = Some(StreamSegment::new(self.stanza, next, size, self.opts.compression_level));
            }
        }
        Ok(())
    }

    /// Writes the stanza record with the first segment header received,
    /// when the stanza has none.
    async fn record_stanza(&mut self) -> Result<()> {
        if self.stanza_recorded {
            return Ok(());
        }
        let Some(seg) = self.seg.as_ref() else { return Ok(()) };
        let Some(h) = seg.header().copied() else { return Ok(()) };
        let name = seg.name().format(self.size.expect("size known"));
        stream::record_stanza(self.repo, self.stanza, &h, &name).await?;
        self.stanza_recorded = true;
        Ok(())
    }

    /// Makes what has arrived durable: with `--synchronous` on a local
    /// repository, in the segment's journal (one `fdatasync`, see
    /// [`crate::wal::journal`]), otherwise as the `.stream` manifest.
    async fn flush(&mut self) -> Result<()> {
        self.flush_as(self.opts.synchronous).await
    }

    /// Makes what has arrived durable as the `.stream` manifest, which
    /// then covers whatever the journal holds.
    async fn flush_manifest(&mut self) -> Result<()> {
        self.flush_as(false).await
    }

    async fn flush_as(&mut self, journal: bool) -> Result<()> {
        let Some(seg) = self.seg.as_mut() else { return Ok(()) };
        if !(if journal { seg.has_unflushed() } else { seg.has_unmanifested() }) {
            return Ok(());
        }
        if !self.stanza_recorded {
            if seg.header().is_none() {
                // Too few bytes to know the cluster: nothing can be stored yet.
                return Ok(());
            }
            self.record_stanza().await?;
        }
        let seg = self.seg.as_mut().expect("checked above");
        if std::env::var_os("CAIRN_TEST_RECEIVE_UNSAFE_FLUSH").is_some() {
            // Test-only: reports bytes as durable without storing them, to
            // show that the zero-loss test fails when the flush position lies.
            self.durable_lsn = seg.received_lsn();
            return Ok(());
        }
        let repo = self.repo;
        if journal {
            let started = Instant::now();
            if blocking(|| seg.flush_to_journal(repo))? {
                self.durable_lsn = seg.durable_lsn();
                self.report.journal_appends += 1;
                self.report.max_flush_s = self.report.max_flush_s.max(started.elapsed().as_secs_f64());
                return Ok(());
            }
        }
        let f = seg.flush(repo).await?;
        self.manifest_at = Instant::now();
        self.durable_lsn = seg.durable_lsn();
        self.report.flushes += 1;
        self.report.stored_bytes += f.stored_bytes;
        self.report.max_flush_s = self.report.max_flush_s.max(f.took.as_secs_f64());
        tracing::debug!(durable = %protocol::lsn_text(self.durable_lsn), took = ?f.took, bytes = f.stored_bytes, "flushed");
        Ok(())
    }
}

fn seg_size(bytes: u64) -> Result<SegmentSize> {
    SegmentSize::new(bytes).map_err(|e| Error::InvalidInput(format!("WAL segment size {bytes}: {e}")))
}
