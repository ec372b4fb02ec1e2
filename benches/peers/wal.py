"""WAL archiving: cairn `wal push`/`wal fetch` against pgBackRest `archive-push`/`archive-get`.

Same machine, same segments for both tools. A PostgreSQL 15 cluster runs
pgbench and archives its WAL into a staging directory with `cp`; then, in each
of --runs passes (tool order rotated, a new repository each time), each tool
archives every staged segment with one process per segment, in name order, the
way PostgreSQL's archive_command would call it, pushes the first segment once
more (the idempotent re-push), and fetches every segment back into an empty
directory, the way restore_command would. Fetched bytes are compared with the
originals; a mismatch aborts the run. The table shows medians over passes.
Process start (`cairn --version`, `pgbackrest version`), reading a segment
(`cat`) and writing one (`cp`, and `dd conv=fsync` for a durable copy) are
timed as the floor a one-process-per-segment design cannot beat.

Durability is not the same on fetch: strace of pgBackRest 2.45 here shows
archive-push writing a temp file, fsync, rename, fsync of the directory (as
cairn does), but archive-get writing the destination with no fsync. `cairn
wal fetch` does not fsync either unless given --fsync (PostgreSQL fsyncs a
restored file it keeps, in its durable_rename), but it writes a temporary
name and renames it, so a partial file never has the name PostgreSQL reads.

With --async-push N each tool pushes ahead: cairn `wal push --ahead N`,
pgBackRest archive-push with archive-async=y and process-max=N. Both then
push from a pg_wal-like directory (hard links to the staged segments) whose
archive_status/<name>.ready markers the bench creates for every segment
before the first call (a backlog, as PostgreSQL leaves when archiving falls
behind) and renames to .done only after that segment's call exited 0, as
PostgreSQL does; so both tools see the same queue. Push CPU then counts only
the foreground processes: the detached background pushers are not children
the bench waits for.

With --also-sync (and --async-push/--async-fetch), each tool is also timed
synchronously in the same run, so the report can set each tool's faster mode
against the other's: pgBackRest's archive-get is faster synchronously than
with archive-async on this kind of machine, cairn's fetch with its prefetcher.

Latency is wall clock around one whole process (start, work, exit); CPU is
user+sys of that process and its children (RUSAGE_CHILDREN deltas).
Throughput is segment bytes / summed wall time of the sequential calls.
Percentiles are nearest-rank over the N segments. Ratios are only meaningful
within one run: /work/shared/peers.md explains why.

We run as root; PostgreSQL and pgBackRest refuse that (or check ownership), so
both run as the unprivileged user `cairntest`. cairn runs as the current user.
"""
import argparse, copy, hashlib, math, os, pwd, re, secrets, shutil, signal, statistics
import subprocess, tempfile, time

import pgcluster
from pgcluster import PGBIN, PGUSER, as_pg, die, log

pgcluster.NAME = "wal"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench")
STANZA = "bench"
SEG_BYTES = 16 << 20
SEG_NAME = re.compile(r"^[0-9A-F]{24}$")
CALL_TIMEOUT_S = 300


def timed(cmd, stdout=subprocess.PIPE, **kw):
    """Runs cmd once; returns (wall, user CPU, system CPU) seconds, CPU of it and its waited-for children.
    Non-zero exit aborts. System time includes the kernel's work for the process's fsync and page cache writes.

    Output goes to a pipe read by us (the tools print a few lines at most) unless stdout says otherwise."""
    wall, user, system, _ = pgcluster.run_timed(cmd, CALL_TIMEOUT_S, stdout=stdout, **kw)
    return wall, user, system


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def du_bytes(path):
    return int(subprocess.run(["du", "-sb", path], check=True, capture_output=True, text=True).stdout.split()[0])


def nearest_rank(xs, p):
    s = sorted(xs)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


class Cluster(pgcluster.Cluster):
    """The benchmark's cluster, archiving with `cp` into a staging directory."""

    def __init__(self, tmp):
        super().__init__(tmp)
        self.staging = os.path.join(tmp, "wal-staging")

    def start(self):
        self.initdb_and_start(f"""
# cairn WAL benchmark
wal_level = replica
archive_mode = on
archive_command = 'cp %p {self.staging}/%f'
synchronous_commit = off
autovacuum = off
""", dirs=(self.staging,))

    def segno(self):
        return int(self.sql("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")) // SEG_BYTES

    def generate(self, n, scale, max_s):
        """Makes at least n complete WAL segments, archives them; returns (names, number made by pgbench -i)."""
        first = self.segno()
        t0 = time.monotonic()
        log(f"pgbench -i -s {scale} ...")
        self.pgbench("-i", "-s", str(scale), "-q")
        after_init = self.segno()
        while self.segno() - first + 1 < n:
            if time.monotonic() - t0 > max_s:
                die(f"only {self.segno() - first + 1} of {n} segments after {max_s} s of pgbench")
            self.pgbench("-n", "-M", "prepared", "-c", "4", "-j", "2", "-T", "10")
            log(f"  {self.segno() - first + 1}/{n} segments")
        last = self.sql("select pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 300
        while True:
            row = self.sql("select coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') "
                           "from pg_stat_archiver").split("|")
            if row[0] >= last:
                break
            if time.monotonic() > deadline:
                die(f"archiver stuck: last archived {row[0]!r}, want {last}, failed {row[1]} ({row[2]})")
            time.sleep(0.2)
        # Leave nothing running that competes with the timed calls: no dirty buffers left for a spread-out
        # checkpoint to write (autovacuum is off in postgresql.conf).
        self.sql("checkpoint")
        names = sorted(f for f in os.listdir(self.staging)
                       if SEG_NAME.match(f) and os.path.getsize(os.path.join(self.staging, f)) == SEG_BYTES)
        if len(names) < n:
            die(f"only {len(names)} archived segments in {self.staging}, want {n}")
        log(f"WAL: {len(names)} segments archived in {time.monotonic() - t0:.0f} s; using the first {n}")
        return names[:n], min(n, after_init - first)


def summarize(calls, nbytes):
    """Figures over one pass of timed() results, one per segment."""
    walls, users, syss = zip(*calls)
    return dict(p50_ms=nearest_rank(walls, 50) * 1e3, p99_ms=nearest_rank(walls, 99) * 1e3,
                mean_ms=statistics.fmean(walls) * 1e3, mb_s=nbytes / 1e6 / sum(walls),
                cpu_ms=statistics.fmean(u + s for u, s in zip(users, syss)) * 1e3,
                user_ms=statistics.fmean(users) * 1e3, sys_ms=statistics.fmean(syss) * 1e3, total_s=sum(walls))


def run_pgbackrest(base, cluster, segs, digests, _args):
    """stanza-create, then one archive-push per segment, then one archive-get per segment into an empty dir."""
    dirs = {k: os.path.join(base, k) for k in ("repo", "lock", "log", "spool", "fetched")}
    for d in [base] + list(dirs.values()):
        os.makedirs(d, exist_ok=True)
        shutil.chown(d, PGUSER, PGUSER)
    conf = os.path.join(base, "pgbackrest.conf")
    async_get = "" if not _args.async_fetch else (
        f"\n[global:archive-get]\narchive-async=y\narchive-get-queue-max={_args.async_fetch * 16}MiB\nprocess-max=2\n")
    if _args.async_push:
        # pg1-path: the stand-in data directory push_dir() makes, for archive-push only.
        async_get += (f"\n[global:archive-push]\narchive-async=y\nprocess-max={_args.async_push}\n"
                      f"\n[{STANZA}:archive-push]\npg1-path={os.path.join(base, 'pgdata')}\n")
    with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(f"""[global]
repo1-path={dirs['repo']}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={secrets.token_urlsafe(48)}
compress-type=zst
log-level-console=warn
lock-path={dirs['lock']}
log-path={dirs['log']}
spool-path={dirs['spool']}
archive-async=n
{async_get}
[{STANZA}]
pg1-path={cluster.data}
pg1-socket-path={cluster.sock}
pg1-port={cluster.port}
""")
    shutil.chown(conf, PGUSER, PGUSER)
    base_cmd = ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}"]
    as_pg(base_cmd + ["stanza-create"])
    pw = pwd.getpwnam(PGUSER)
    # setuid in the child (no runuser/PAM process in between), so the timing is pgBackRest's own.
    kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=base,
              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": base, "LANG": "C"})
    staging = push_dir(base, cluster, segs) if _args.async_push else cluster.staging
    push = push_all(lambda p: base_cmd + ["archive-push", p], staging, segs, **kw)
    repo_bytes = du_bytes(dirs["repo"])
    repush = timed(base_cmd + ["archive-push", os.path.join(staging, segs[0])], **kw)
    fetch = fetch_all(lambda s, dest: base_cmd + ["archive-get", s, dest], dirs["fetched"], segs, digests,
                      "pgbackrest", **kw)
    return push, fetch, repush, repo_bytes, {}


def run_cairn(base, cluster, segs, digests, args, CAIRN=CAIRN):
    """init with a new key file, then one `wal push` per segment, then one `wal fetch` per segment.
    CAIRN: the binary (another one for cairn@LABEL=PATH)."""
    repo, key, cache, fetched = (os.path.join(base, k) for k in ("repo", "key", "cache", "fetched"))
    os.makedirs(fetched)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env["CAIRN_CACHE_DIR"] = cache
    kw = dict(env=env, cwd=base)
    r = subprocess.run([CAIRN, "--repo", repo, "--key-file", key, "init"], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        die(f"cairn init failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    mode = os.stat(key).st_mode & 0o777
    if mode != 0o600:
        die(f"cairn init wrote the key file with mode {mode:o}, want 600")
    base_cmd = [CAIRN, "--repo", repo, "--key-file", key, "wal"]
    push_cmd = base_cmd + ["push", "--stanza", STANZA]
    if args.cairn_compression is not None:
        push_cmd += ["--compression", str(args.cairn_compression)]
    if args.async_push:
        push_cmd += ["--ahead", str(args.async_push)]
    staging = push_dir(base, cluster, segs) if args.async_push else cluster.staging
    push = push_all(lambda p: push_cmd + [p], staging, segs, **kw)
    repo_bytes = du_bytes(repo)
    repush = timed(push_cmd + [os.path.join(staging, segs[0])], **kw)
    fetch_cmd = base_cmd + ["fetch", "--stanza", STANZA]
    if args.async_fetch:
        fetch_cmd += ["--spool", os.path.join(base, "spool"), "--prefetch", str(args.async_fetch)]
    fetch = fetch_all(lambda s, dest: fetch_cmd + [s, dest], fetched, segs, digests, "cairn", **kw)
    extra = {"cache_bytes": du_bytes(cache) if os.path.exists(cache) else 0,
             "repo_bytes_after_repush": du_bytes(repo)}
    return push, fetch, repush, repo_bytes, extra


def push_dir(base, cluster, segs):
    """A pg_wal directory for --async-push: hard links to the staged segments, and PostgreSQL's
    archive_status/<name>.ready marker for every one of them (a backlog of len(segs) segments). It sits in a
    stand-in data directory (PG_VERSION and global/pg_control copied from the cluster), because pgBackRest's
    async push wants the WAL path under pg1-path."""
    pgdata = os.path.join(base, "pgdata")
    d = os.path.join(pgdata, "pg_wal")
    st = os.path.join(d, "archive_status")
    os.makedirs(st)
    os.makedirs(os.path.join(pgdata, "global"))
    for f in ("PG_VERSION", "global/pg_control"):
        shutil.copyfile(os.path.join(cluster.data, f), os.path.join(pgdata, f))
    for root, dirs, files in os.walk(pgdata):
        for x in [root] + [os.path.join(root, f) for f in files]:
            shutil.chown(x, PGUSER, PGUSER)
    os.chmod(pgdata, 0o700)
    for s in segs:
        os.link(os.path.join(cluster.staging, s), os.path.join(d, s))
        open(os.path.join(st, s + ".ready"), "w").close()
    return d


def push_all(cmd_for, src, segs, **kw):
    """One timed push per segment, in name order. In a pg_wal-like directory (--async-push), a segment's
    .ready marker becomes .done only after its call exited 0 (timed() aborts on anything else), as
    PostgreSQL's archiver does; then the background pushers get a moment to finish, and cairn's (which
    waits for more files to become ready) is waited for, before anything else is timed."""
    st = os.path.join(src, "archive_status")
    out = []
    for s in segs:
        out.append(timed(cmd_for(os.path.join(src, s)), **kw))
        if os.path.isdir(st):
            os.rename(os.path.join(st, s + ".ready"), os.path.join(st, s + ".done"))
    if os.path.isdir(st):
        time.sleep(1)
        deadline = time.monotonic() + 60
        while helpers_on(src) and time.monotonic() < deadline:
            time.sleep(0.2)
    return out


def helpers_on(path):
    """Whether a cairn background helper (push-ahead, prefetch) is working on path."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(a in (b"push-ahead", b"prefetch") for a in args) and path.encode() in args:
            return True
    return False


def fetch_all(cmd_for, fetched, segs, digests, tool, **kw):
    """One timed fetch per segment to the same name, as PostgreSQL does (%p is
    pg_wal/RECOVERYXLOG every time): after each call, untimed, the file is
    checked against the original and removed, as recovery consumes it. Keeping
    every fetched copy instead would time the kernel handing out fresh page
    cache pages (on this VM ~60 ms per 16 MiB, the same for any tool), not the
    tool."""
    dest = os.path.join(fetched, "RECOVERYXLOG")
    if tool == "pgbackrest":
        shutil.chown(fetched, PGUSER, PGUSER)
    out = []
    for s in segs:
        out.append(timed(cmd_for(s, dest), **kw))
        if not os.path.isfile(dest):
            die(f"{tool}: fetch of {s} exited 0 but {dest} does not exist")
        if sha256(dest) != digests[s]:
            die(f"{tool}: fetched {s} differs from the archived original")
        os.unlink(dest)
    log(f"{tool}: all {len(segs)} fetched segments match the originals")
    return out


def check_cairn():
    if not os.access(CAIRN, os.X_OK):
        die(f"{CAIRN} is missing: run `make build` first (or pass --tools pgbackrest)")
    r = subprocess.run([CAIRN, "wal", "push", "--help"], capture_output=True)
    if r.returncode != 0:
        die(f"{CAIRN} has no `wal push` command (rebuild it, or pass --tools pgbackrest)")


def null_costs(cluster, segs):
    """The floor a per-segment process cannot beat: process start, and reading the segment."""
    pw = pwd.getpwnam(PGUSER)
    out = {}
    out["true (fork+exec)"] = [timed(["/bin/true"])[0] for _ in range(20)]
    if os.access(CAIRN, os.X_OK):
        out["cairn --version"] = [timed([CAIRN, "--version"])[0] for _ in range(20)]
    out["pgbackrest version"] = [timed(["pgbackrest", "version"], user=pw.pw_uid, group=pw.pw_gid,
                                       extra_groups=[])[0] for _ in range(20)]
    out["cat segment > /dev/null"] = [timed(["cat", os.path.join(cluster.staging, s)], stdout=subprocess.DEVNULL)[0]
                                      for s in segs]
    # What delivering a segment costs with no decoding at all: a copy (what pgBackRest's archive-get leaves
    # behind: no fsync) and a copy made durable (what restore_command must leave: dd's fsync before exit;
    # cairn also renames and fsyncs the directory). Written next to where the fetches write, one name,
    # removed after each call, as fetch_all() does.
    dest = os.path.join(os.path.dirname(cluster.staging), "floor-RECOVERYXLOG")
    for label, cmd in (("cp segment", lambda src: ["cp", src, dest]),
                       ("dd segment conv=fsync",
                        lambda src: ["dd", "status=none", "bs=2M", f"if={src}", f"of={dest}", "conv=fsync"])):
        out[label] = []
        for s in segs:
            out[label].append(timed(cmd(os.path.join(cluster.staging, s)))[0])
            os.unlink(dest)
    out["durable write in-process"] = [durable_write(os.path.join(cluster.staging, s), dest) for s in segs]
    return out


def durable_write(src, dest):
    """Seconds to deliver src's bytes (already in memory) to dest as restore_command must, done the fastest
    way we know, in this process (no process start): 2 MiB writes to a temporary name with writeback started
    after each, fsync, rename, fsync of the directory. What is left of a fetch once decoding is free."""
    with open(src, "rb") as f:
        data = memoryview(f.read())
    tmp, step = dest + ".tmp", 2 << 20
    if os.path.exists(tmp):  # left by an interrupted run
        os.unlink(tmp)
    t = time.perf_counter()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    for off in range(0, len(data), step):
        piece = data[off:off + step]
        while piece:
            piece = piece[os.write(fd, piece):]
        os.posix_fadvise(fd, off, step, os.POSIX_FADV_DONTNEED)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, dest)
    d = os.open(os.path.dirname(dest), os.O_RDONLY)
    os.fsync(d)
    os.close(d)
    wall = time.perf_counter() - t
    os.unlink(dest)
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=40, help="16 MiB WAL segments to archive (default 40)")
    ap.add_argument("--scale", type=int, default=20, help="pgbench -i scale (default 20)")
    ap.add_argument("--tools", default="cairn,pgbackrest",
                    help="comma list of cairn, pgbackrest and cairn@LABEL=PATH (another cairn binary)")
    ap.add_argument("--max-pgbench-s", type=int, default=1800, help="give up generating WAL after this long")
    ap.add_argument("--runs", type=int, default=3, help="push+fetch passes per tool, medians reported (default 3)")
    ap.add_argument("--cairn-compression", type=int, help="pass --compression N to `cairn wal push`")
    ap.add_argument("--async-fetch", type=int, metavar="N",
                    help="fetch ahead N segments: cairn `wal fetch --spool --prefetch N`, pgBackRest "
                         "archive-get with archive-async=y, archive-get-queue-max=N*16MiB, process-max=2")
    ap.add_argument("--async-push", type=int, metavar="N",
                    help="push ahead N segments: cairn `wal push --ahead N`, pgBackRest archive-push with "
                         "archive-async=y, process-max=N; both push from a directory with archive_status/*.ready")
    ap.add_argument("--also-sync", action="store_true",
                    help="with --async-push/--async-fetch, also time both tools synchronously in the same run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (cluster stopped) for inspection")
    a = ap.parse_args()
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    # cairn@LABEL=PATH: another cairn binary, for a before/after comparison in one run.
    bins = dict(t.split("=", 1) for t in tools if t.startswith("cairn@") and "=" in t)
    tools = [t.split("=", 1)[0] for t in tools]
    if a.segments < 1 or a.runs < 1 or not tools or any(t not in ("cairn", "pgbackrest") and t not in bins for t in tools):
        die("--segments and --runs must be >= 1 and --tools a comma list of cairn, pgbackrest, cairn@LABEL=PATH")
    if os.geteuid() != 0:
        die("run as root: PostgreSQL and pgBackRest are switched to the user cairntest")
    try:
        pwd.getpwnam(PGUSER)
    except KeyError:
        die(f"no user {PGUSER}: run benches/peers/wal.sh, or `useradd --system --no-create-home {PGUSER}`")
    if not os.access(f"{PGBIN}/postgres", os.X_OK) or not shutil.which("pgbackrest"):
        die("PostgreSQL 15 or pgbackrest missing: run benches/peers/wal.sh")
    if "cairn" in tools:
        check_cairn()
    asynchronous = bool(a.async_push or a.async_fetch)
    if a.also_sync and not asynchronous:
        die("--also-sync goes with --async-push and/or --async-fetch")
    # (label, tool, arguments): the asynchronous variants as asked, then, with --also-sync, the synchronous ones.
    sync_args = copy.copy(a)
    sync_args.async_push = sync_args.async_fetch = None
    variants = [(f"{t} async" if asynchronous else t, t, a) for t in tools]
    if a.also_sync:
        variants += [(t, t, sync_args) for t in tools]
    os.makedirs(WORK, exist_ok=True)

    def on_signal(signum, _frame):
        raise SystemExit(f"wal bench: interrupted by signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = tempfile.mkdtemp(prefix="cairn-walbench-", dir="/tmp")
    shutil.chown(tmp, PGUSER, PGUSER)
    cluster = Cluster(tmp)
    try:
        cluster.start()
        segs, from_init = cluster.generate(a.segments, a.scale, a.max_pgbench_s)
        paths = [os.path.join(cluster.staging, s) for s in segs]
        digests = {s: sha256(p) for s, p in zip(segs, paths)}  # also warms the page cache
        nbytes = sum(os.path.getsize(p) for p in paths)
        version = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        versions = {"pgbackrest": version(["pgbackrest", "version"]), "postgres": version([f"{PGBIN}/postgres", "-V"])}
        if "cairn" in tools:
            versions["cairn"] = version([CAIRN, "--version"])
        results = {"segments": segs, "segment_bytes": nbytes, "segments_from_pgbench_init": from_init,
                   "scale": a.scale, "cpus": os.cpu_count(), "versions": versions,
                   "cairn_compression": a.cairn_compression, "async_fetch": a.async_fetch, "async_push": a.async_push, "also_sync": a.also_sync,
                   "runs": []}
        # Before the tools, so that their binaries and libraries are in the page cache for the first timed call.
        results["null_s"] = null_costs(cluster, segs)
        for i in range(a.runs):
            run = {}
            # Rotate the order from run to run so that neither tool always goes first.
            for label, t, va in variants[i % len(variants):] + variants[:i % len(variants)]:
                log(f"run {i + 1}/{a.runs}: {label}: {len(segs)} pushes, then {len(segs)} fetches ...")
                base = os.path.join(tmp, f"run{i}-{label.replace(' ', '-')}")
                os.makedirs(base)
                if t in bins:
                    push, fetch, repush, repo_bytes, extra = run_cairn(base, cluster, segs, digests, va, bins[t])
                else:
                    fn = run_cairn if t == "cairn" else run_pgbackrest
                    push, fetch, repush, repo_bytes, extra = fn(base, cluster, segs, digests, va)
                run[label] = dict(push=summarize(push, nbytes), fetch=summarize(fetch, nbytes),
                              repush_ms=repush[0] * 1e3, repush_cpu_ms=(repush[1] + repush[2]) * 1e3,
                              repo_bytes=repo_bytes, push_s=[c[0] for c in push], push_user_s=[c[1] for c in push],
                              push_sys_s=[c[2] for c in push], fetch_s=[c[0] for c in fetch],
                              fetch_user_s=[c[1] for c in fetch], fetch_sys_s=[c[2] for c in fetch], **extra)
                shutil.rmtree(base)  # the fetched copies alone are as big as the WAL
            labels = [v[0] for v in variants]
            results["runs"].append(dict(sorted(run.items(), key=lambda kv: labels.index(kv[0]))))
        results["tools"] = {v[0]: medians([r[v[0]] for r in results["runs"]]) for v in variants}
    finally:
        pgcluster.tear_down(cluster, tmp, a.keep)

    report(results)
    pgcluster.save(results, os.path.join(WORK, "wal-results.json"))


def medians(per_run):
    """The median over runs of every summary figure of one tool."""
    med = lambda xs: statistics.median(xs)
    out = {k: {m: med([r[k][m] for r in per_run]) for m in per_run[0][k]} for k in ("push", "fetch")}
    for k in ("repush_ms", "repush_cpu_ms", "repo_bytes"):
        out[k] = med([r[k] for r in per_run])
    return out


def report(r):
    n, mb = len(r["segments"]), r["segment_bytes"] / 1e6
    print(f"\n{n} WAL segments ({mb:.0f} MB; {r['segments_from_pgbench_init']} from pgbench -i -s {r['scale']}, "
          f"the rest from a pgbench run), one process per segment, {r['cpus']} CPUs; "
          f"medians of {len(r['runs'])} run(s) of {n} pushes then {n} fetches into a new repository; "
          f"pgBackRest zst level 3 (its default), cairn zstd level "
          f"{r['cairn_compression'] if r['cairn_compression'] is not None else '(its default)'}; "
          f"{'push ahead ' + str(r['async_push']) + ' segments (both tools; push CPU = foreground only); ' if r.get('async_push') else 'synchronous push; '}"
          f"{'fetch ahead ' + str(r['async_fetch']) + ' segments (both tools); ' if r.get('async_fetch') else 'synchronous fetch; '}"
          f"{'rows without async: both tools synchronous in push and fetch, same run; ' if r.get('also_sync') else ''}"
          f"p50/p99 nearest-rank over {n}{' (p99 = max)' if n < 100 else ''}, throughput = bytes / summed wall time\n")
    print("| tool | push p50 ms | push p99 ms | push mean ms | push MB/s | push CPU ms (u+s) | re-push ms "
          "| fetch p50 ms | fetch p99 ms | fetch mean ms | fetch MB/s | fetch CPU ms (u+s) | repo MB | repo / WAL |")
    print("|---|" + "---|" * 13)
    for t, x in r["tools"].items():
        p, f = x["push"], x["fetch"]
        cpu = lambda y: f"{y['cpu_ms']:.0f} ({y['user_ms']:.0f}+{y['sys_ms']:.0f})"
        print(f"| {t} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['mean_ms']:.1f} | {p['mb_s']:.0f} | {cpu(p)} | "
              f"{x['repush_ms']:.1f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['mean_ms']:.1f} | {f['mb_s']:.0f} | "
              f"{cpu(f)} | {x['repo_bytes'] / 1e6:.1f} | {x['repo_bytes'] / r['segment_bytes']:.3f} |")
    print("\nfloor, median ms: " + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f}" for k, v in r["null_s"].items()))
    durable, start = r["null_s"].get("durable write in-process"), r["null_s"].get("cairn --version")
    # pgBackRest's synchronous fetch: the plain row, or the async row of a run whose fetch was synchronous.
    sync_get = r["tools"].get("pgbackrest") or (None if r.get("async_fetch") else r["tools"].get("pgbackrest async"))
    if durable and start and sync_get:
        # Throughput is summed wall time, so the floor that bounds it is a mean.
        d, s = statistics.fmean(durable) * 1e3, statistics.median(start) * 1e3
        pf = sync_get["fetch"]["mean_ms"]
        print(f"fetch floor: process start {s:.1f} ms + durable write of a segment {d:.1f} ms (mean) = {s + d:.1f} ms, "
              f"with decoding free; pgBackRest's fetch (no fsync) averages {pf:.1f} ms, so a one-process-per-segment "
              f"fetch that fsyncs is at most {pf / (s + d):.2f}x its throughput on this machine")
    x = r["tools"]
    for suffix in ("", " async"):
        c, p = x.get("cairn" + suffix), x.get("pgbackrest" + suffix)
        if c and p:
            print(f"\ncairn{suffix} / pgBackRest{suffix}: push throughput {c['push']['mb_s'] / p['push']['mb_s']:.2f}x, "
                  f"fetch throughput {c['fetch']['mb_s'] / p['fetch']['mb_s']:.2f}x, "
                  f"push CPU {c['push']['cpu_ms'] / p['push']['cpu_ms']:.2f}x, "
                  f"repo size {c['repo_bytes'] / p['repo_bytes']:.3f}x")
    if r.get("also_sync") and all(t in x and t + " async" in x for t in ("cairn", "pgbackrest")):
        best = lambda t, k: max((t, t + " async"), key=lambda v: x[v][k]["mb_s"])
        for k in [k for k, n in (("push", r.get("async_push")), ("fetch", r.get("async_fetch"))) if n]:
            c, p = best("cairn", k), best("pgbackrest", k)
            print(f"{k}, each tool's faster mode: {c} / {p}: throughput {x[c][k]['mb_s'] / x[p][k]['mb_s']:.2f}x")
    if "cairn" in x and "pgbackrest" in x or "cairn async" in x and "pgbackrest async" in x:
        print("note: neither fetch fsyncs (cairn renames a verified temporary file into place; pgBackRest 2.45 "
              "archive-get writes the destination directly); both fsync on push; each fetch writes "
              "pg_wal/RECOVERYXLOG-style to one name, consumed before the next")


if __name__ == "__main__":
    main()
