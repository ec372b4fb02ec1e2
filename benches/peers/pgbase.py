"""PostgreSQL base backups and restores: cairn `backup --kind pg-base` and
`pg restore` against pgBackRest `backup` and `restore`, with pg_basebackup to
/dev/null as the floor of cairn's producer path.

One PostgreSQL 15 cluster (initdb, 16 MiB WAL segments, `pgbench -i -s
SCALE`), archive_mode=on with an archive_command that runs both
`cairn --config CFG wal push %p` and `pgbackrest archive-push %p`, so both
repositories hold the same WAL and every backup below waits for the same
archiver. In this order, all in one run (figures are comparable only within
a run, see /work/shared/peers.md):

  1. pg_basebackup -D - -Ft -X none --checkpoint=fast > /dev/null (--runs
     times, median): the producer alone. With -X none the server waits for
     the backup's last WAL segment to be archived, as both tools do.
  2. cairn's first base backup (`cairn backup --kind pg-base -- pg_basebackup
     ...`, the same producer arguments) and pgBackRest's first full backup
     (start-fast=y, the equivalent of --checkpoint=fast).
  3. Per --runs pass: `pgbench -c 2 -t 2000 -n`, archive drained, then
     cairn's next base backup (every cairn backup is incremental by
     construction: uploaded bytes / bytes read), pgBackRest `--type=incr`
     (its best case, relative to its previous backup, before the change) and
     pgBackRest `--type=full` (re-stores everything).
  4. Per --runs pass: `cairn pg restore --latest` and `pgbackrest restore`
     into fresh directories. cairn checks every file against backup_manifest;
     the first restored directory is also checked with pg_verifybackup. Both
     restored trees must hold the same files (backup_manifest, which only
     cairn restores, aside).

Throughput is database bytes (du -sb of PGDATA without pg_wal, at the time of
the operation) / wall seconds. Repository growth is du -sb of the whole
repository before and after, so it includes the WAL archived meanwhile
(the same segments go to both). CPU is user+sys of the client processes
(RUSAGE_CHILDREN), not the server's walsender.

We run as root. PostgreSQL, pgBackRest and pg_verifybackup run as the
unprivileged user `cairntest` (created if missing); cairn runs as root, with
group cairntest and umask 002 so that the repository directories it creates
stay writable for `wal push` from archive_command (cairntest).

Usage: python3 benches/peers/pgbase.py [--scale 50] [--runs 1]
[--pgbackrest-process-max 1] [--keep]   (installs postgresql-15 and
pgbackrest with apt when missing; results in .work/bench/pgbase-results.json)
"""
import argparse, json, os, pwd, secrets, shutil, signal, statistics, subprocess, tempfile
import time

import pgcluster
from pgcluster import PGBIN, PGUSER, as_pg, die, log

pgcluster.NAME = "pgbase"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench")
STANZA = "bench"
CALL_TIMEOUT_S = 3600
# Files that only cairn's restore has, by design: pg_basebackup's tar holds
# backup_manifest (pg_verifybackup reads it) and an empty tablespace_map (no
# tablespaces here); pgBackRest writes neither.
ONLY_CAIRN_OK = {"backup_manifest", "tablespace_map"}


def timed(cmd, stdout=subprocess.PIPE, **kw):
    """Runs cmd once; returns ({wall, cpu} seconds, stdout). CPU is user+sys of it and its waited-for children.
    Non-zero exit aborts."""
    wall, user, system, out = pgcluster.run_timed(cmd, CALL_TIMEOUT_S, stdout=stdout, **kw)
    return ({"wall_s": wall, "cpu_s": user + system, "rss_mb": pgcluster.LAST_MAXRSS_KB / 1024},
            out.decode(errors="replace"))


def du_bytes(path, exclude=None):
    total = int(subprocess.run(["du", "-sb", path], check=True, capture_output=True, text=True).stdout.split()[0])
    if exclude and os.path.exists(os.path.join(path, exclude)):
        total -= du_bytes(os.path.join(path, exclude))
    return total


def tree_files(root):
    """Relative paths of the non-directories under root."""
    out = set()
    for dp, dns, fns in os.walk(root):
        for n in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
            out.add(os.path.relpath(os.path.join(dp, n), root))
    return out


def pg_kw(home):
    """subprocess arguments that run a timed call as the PostgreSQL user: setuid in the child, no runuser/PAM
    process in between, so the timing is the tool's own."""
    pw = pwd.getpwnam(PGUSER)
    return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=home,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C"})


class Cluster(pgcluster.Cluster):
    """The benchmark's cluster, archiving to both tools."""

    def start(self, archive_command):
        quoted = archive_command.replace("\\", "\\\\").replace("'", "''")
        self.initdb_and_start(f"""
# cairn base backup benchmark
wal_level = replica
archive_mode = on
archive_command = '{quoted}'
max_wal_senders = 4
synchronous_commit = off
autovacuum = off
""", initdb_args=["--wal-segsize=16"])

    def archiver(self):
        row = self.sql("select coalesce(last_archived_wal, ''), archived_count, failed_count, "
                       "coalesce(last_failed_wal, '') from pg_stat_archiver").split("|")
        return {"last_archived": row[0], "archived": int(row[1]), "failed": int(row[2]), "last_failed": row[3]}

    def drain(self):
        """Switches WAL, waits until the archiver has pushed it (to both tools), then checkpoints, so that
        nothing left over competes with the next timed call. Returns the last segment's name."""
        last = self.sql("select pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 600
        while (a := self.archiver())["last_archived"] < last:
            if time.monotonic() > deadline:
                die(f"archiver stuck: {a}, want {last}\n{self.log_tail()}")
            time.sleep(0.2)
        self.sql("checkpoint")
        return last

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def producer(self):
        """pg_basebackup as cairn runs it: tar to stdout, no WAL, fast checkpoint, over the unix socket as the
        superuser initdb created (the OS user that ran it)."""
        return [f"{PGBIN}/pg_basebackup", "-h", self.sock, "-p", str(self.port), "-U", PGUSER, "-D", "-", "-Ft",
                "-X", "none", "--checkpoint=fast"]


class Cairn:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "cairn")
        os.makedirs(self.dir)
        self.bin = os.path.join(self.dir, "cairn")  # a copy the PostgreSQL user can execute
        shutil.copy(CAIRN, self.bin)
        os.chmod(self.bin, 0o755)
        self.repo, self.key = os.path.join(self.dir, "repo"), os.path.join(self.dir, "key")
        self.config = os.path.join(self.dir, "cairn.toml")
        self.root_cache = os.path.join(self.dir, "root-cache")
        # Every cairn call runs as the PostgreSQL user, as archive_command's `wal push` does: a local repository
        # is private (directories 0700), so a pack directory root created would refuse a later push's pack.
        shutil.chown(self.dir, PGUSER, PGUSER)
        self.kw = pg_kw(self.dir)
        r = subprocess.run([self.bin, "--repo", self.repo, "--key-file", self.key, "--cache-dir", self.root_cache,
                            "init"], capture_output=True, text=True, **self.kw)
        if r.returncode != 0:
            die(f"cairn init failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        with open(self.config, "w") as f:
            f.write(f'repo = "{self.repo}"\nkey_file = "{self.key}"\nstanza = "{STANZA}"\n'
                    f'cache_dir = "{os.path.join(self.dir, "pg-cache")}"\n')
        subprocess.run(["chown", "-R", f"{PGUSER}:{PGUSER}", self.dir], check=True)
        os.chmod(self.key, 0o600)

    def push_cmd(self):
        return f"{self.bin} --config {self.config} wal push %p"

    def cmd(self, *args):
        return [self.bin, "--config", self.config, "--cache-dir", self.root_cache, "--json", "-q"] + list(args)

    def run(self, *args, **extra):
        t, out = timed(self.cmd(*args), **self.kw, **extra)
        return t, json.loads(out) if out.strip() else None


class PgBackRest:
    def __init__(self, tmp, cluster, process_max):
        self.dir = os.path.join(tmp, "pgbackrest")
        dirs = {k: os.path.join(self.dir, k) for k in ("repo", "lock", "log", "spool")}
        for d in [self.dir] + list(dirs.values()):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, PGUSER, PGUSER)
        self.repo = dirs["repo"]
        self.conf = os.path.join(self.dir, "pgbackrest.conf")
        with open(os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(f"""[global]
repo1-path={dirs['repo']}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={secrets.token_urlsafe(48)}
compress-type=zst
process-max={process_max}
start-fast=y
log-level-console=warn
log-level-file=off
lock-path={dirs['lock']}
log-path={dirs['log']}
spool-path={dirs['spool']}
archive-async=n

[{STANZA}]
pg1-path={cluster.data}
pg1-socket-path={cluster.sock}
pg1-port={cluster.port}
""")
        shutil.chown(self.conf, PGUSER, PGUSER)
        self.base = ["pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}"]
        self.kw = pg_kw(self.dir)

    def push_cmd(self):
        return f"pgbackrest --config={self.conf} --stanza={STANZA} archive-push %p"

    def run(self, *args):
        return timed(self.base + list(args), **self.kw)

    def info(self):
        return json.loads(as_pg(self.base + ["--output=json", "info"]))[0]


def backup_row(t, db_bytes, growth, **extra):
    return dict(wall_s=t["wall_s"], cpu_s=t["cpu_s"], rss_mb=t["rss_mb"], db_bytes=db_bytes, mb_s=db_bytes / 1e6 / t["wall_s"],
                repo_growth=growth, **extra)


def cairn_backup(cluster, cairn, db_bytes):
    before = du_bytes(cairn.repo)
    t, j = cairn.run("backup", "--kind", "pg-base", "--stanza", STANZA, "--", *cluster.producer())
    if j.get("kind") != "pg-base" or not (j.get("metadata") or {}).get("pg", {}).get("wal_complete"):
        die(f"cairn backup: not a usable pg-base snapshot: {json.dumps(j)[:2000]}")
    s = j["stats"]
    return backup_row(t, db_bytes, du_bytes(cairn.repo) - before, bytes_read=s["bytes_read"],
                      uploaded_bytes=s["uploaded_bytes"], new_bytes=s["new_bytes"],
                      uploaded_over_read=s["uploaded_bytes"] / s["bytes_read"], snapshot=j["snapshot"])


def pgbackrest_backup(pgbr, kind, db_bytes):
    before = du_bytes(pgbr.repo)
    t, _ = pgbr.run(f"--type={kind}", "backup")
    last = pgbr.info()["backup"][-1]
    if last["type"] != kind:
        die(f"pgbackrest backup --type={kind} recorded a {last['type']} backup")
    i = last["info"]
    return backup_row(t, db_bytes, du_bytes(pgbr.repo) - before, backup_size=i["size"], backup_delta=i["delta"],
                      repo_size=i["repository"]["size"], repo_delta=i["repository"]["delta"], label=last["label"])


def restore_pair(tmp, i, cairn, pgbr, db_bytes, verify):
    """One cairn and one pgBackRest restore into new directories; returns their rows."""
    rows = {}
    cdir = os.path.join(tmp, f"restore{i}-cairn")
    os.makedirs(cdir, mode=0o700)
    shutil.chown(cdir, PGUSER, PGUSER)
    t, j = cairn.run("pg", "restore", "--stanza", STANZA, "--to", cdir, "--latest")
    rows["cairn"] = dict(wall_s=t["wall_s"], cpu_s=t["cpu_s"], rss_mb=t["rss_mb"], db_bytes=db_bytes, mb_s=db_bytes / 1e6 / t["wall_s"],
                         verified=j.get("verified"), restored_bytes=du_bytes(cdir, "pg_wal"))
    pdir = os.path.join(tmp, f"restore{i}-pgbackrest")
    os.makedirs(pdir, mode=0o700)
    shutil.chown(pdir, PGUSER, PGUSER)
    t, _ = pgbr.run(f"--pg1-path={pdir}", "restore")
    rows["pgbackrest"] = dict(wall_s=t["wall_s"], cpu_s=t["cpu_s"], rss_mb=t["rss_mb"], db_bytes=db_bytes,
                              mb_s=db_bytes / 1e6 / t["wall_s"], restored_bytes=du_bytes(pdir, "pg_wal"))
    cf, pf = tree_files(cdir), tree_files(pdir)
    only_c, only_p = sorted(cf - pf - ONLY_CAIRN_OK), sorted(pf - cf)
    if only_c or only_p:
        die(f"restored trees differ: only in cairn's {only_c[:20]} ({len(only_c)}), "
            f"only in pgBackRest's {only_p[:20]} ({len(only_p)})")
    if os.path.getsize(os.path.join(cdir, "tablespace_map")) if "tablespace_map" in cf else 0:
        die("cairn's restore has a non-empty tablespace_map, but the cluster has no tablespaces")
    rows["cairn"]["files"], rows["pgbackrest"]["files"] = len(cf), len(pf)
    rows["cairn"]["common_files"] = len(cf & pf)
    if verify:
        subprocess.run(["chown", "-R", f"{PGUSER}:{PGUSER}", cdir], check=True)
        as_pg([f"{PGBIN}/pg_verifybackup", "-n", "-i", "postgresql.auto.conf", "-i", "recovery.signal", cdir])
        log(f"pg_verifybackup: {cdir} matches its backup_manifest")
    shutil.rmtree(cdir)
    shutil.rmtree(pdir)
    return rows


def ensure_deps():
    if os.geteuid() != 0:
        die("run as root: PostgreSQL and pgBackRest are switched to the user cairntest")
    pkgs = [p for p, ok in (("postgresql-15", os.access(f"{PGBIN}/postgres", os.X_OK)),
                            ("pgbackrest", shutil.which("pgbackrest"))) if not ok]
    if pkgs:
        log(f"installing {' '.join(pkgs)} ...")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + pkgs, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    try:
        pwd.getpwnam(PGUSER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PGUSER], check=True)
    if not os.access(CAIRN, os.X_OK):
        die(f"{CAIRN} is missing: run `make build` first (or set CAIRN_BIN)")


def med(rows):
    """Median of every numeric figure over runs (the first run's value for the rest)."""
    out = dict(rows[0])
    for k, v in rows[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in rows)
    out["runs"] = len(rows)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=50, help="pgbench -i scale (default 50, ~750 MB)")
    ap.add_argument("--runs", type=int, default=1,
                    help="passes of pg_basebackup, change + second backups, and restores; medians (default 1)")
    ap.add_argument("--pgbackrest-process-max", type=int, default=1,
                    help="pgBackRest process-max for backup and restore (default 1, its own default)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (cluster stopped) for inspection")
    a = ap.parse_args()
    if a.scale < 1 or a.runs < 1 or a.pgbackrest_process_max < 1:
        die("--scale, --runs and --pgbackrest-process-max must be >= 1")
    ensure_deps()
    os.makedirs(WORK, exist_ok=True)

    def on_signal(signum, _frame):
        raise SystemExit(f"pgbase bench: interrupted by signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = tempfile.mkdtemp(prefix="cairn-pgbase-", dir="/tmp")
    os.chmod(tmp, 0o755)
    shutil.chown(tmp, PGUSER, PGUSER)
    cluster = Cluster(tmp)
    version = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    results = {"scale": a.scale, "runs": a.runs, "cpus": os.cpu_count(),
               "pgbackrest_process_max": a.pgbackrest_process_max,
               "versions": {"cairn": version([CAIRN, "--version"]), "pgbackrest": version(["pgbackrest", "version"]),
                            "postgres": version([f"{PGBIN}/postgres", "-V"])}}
    try:
        cairn = Cairn(tmp)
        pgbr = PgBackRest(tmp, cluster, a.pgbackrest_process_max)
        cluster.start(f"{cairn.push_cmd()} && {pgbr.push_cmd()}")
        as_pg(pgbr.base + ["stanza-create"], cwd=pgbr.dir)
        as_pg(pgbr.base + ["check"], cwd=pgbr.dir)  # a WAL switch archived by the whole archive_command
        t0 = time.monotonic()
        log(f"pgbench -i -s {a.scale} ...")
        cluster.pgbench("-i", "-s", str(a.scale), "-q")
        cluster.drain()
        db = du_bytes(cluster.data, "pg_wal")
        log(f"loaded and archived in {time.monotonic() - t0:.0f} s; database {db / 1e6:.0f} MB "
            f"(PGDATA without pg_wal), archiver {cluster.archiver()}")
        results["db_bytes_initial"] = db

        floor = []
        for i in range(a.runs):
            t, _ = timed(cluster.producer(), stdout=subprocess.DEVNULL)
            floor.append(backup_row(t, db, None))
            log(f"pg_basebackup > /dev/null: {t['wall_s']:.1f} s")
        cluster.drain()
        results["pg_basebackup"] = med(floor)

        log("first backups ...")
        results["cairn_first"] = cairn_backup(cluster, cairn, db)
        log(f"  cairn: {results['cairn_first']['wall_s']:.1f} s")
        cluster.drain()
        results["pgbackrest_first"] = pgbackrest_backup(pgbr, "full", db)
        log(f"  pgbackrest full: {results['pgbackrest_first']['wall_s']:.1f} s")

        second = {"cairn": [], "pgbackrest_incr": [], "pgbackrest_full": []}
        for i in range(a.runs):
            cluster.pgbench("-c", "2", "-t", "2000", "-n")
            cluster.drain()
            db = du_bytes(cluster.data, "pg_wal")
            log(f"run {i + 1}/{a.runs}: after pgbench -c 2 -t 2000: database {db / 1e6:.0f} MB")
            second["cairn"].append(cairn_backup(cluster, cairn, db))
            cluster.drain()
            # incr before full: relative to pgBackRest's previous backup, taken before the same change.
            second["pgbackrest_incr"].append(pgbackrest_backup(pgbr, "incr", db))
            cluster.drain()
            second["pgbackrest_full"].append(pgbackrest_backup(pgbr, "full", db))
            log("  " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in second.items()))
        results["second"] = {k: med(v) for k, v in second.items()}

        last = cluster.drain()
        arch = cluster.archiver()
        results["archiver"] = arch
        if arch["failed"]:
            die(f"archive_command failed {arch['failed']} time(s), last on {arch['last_failed']}\n{cluster.log_tail()}")
        _, show = cairn.run("wal", "show", "--stanza", STANZA)
        info = pgbr.info()
        results["cairn_wal_show"], results["pgbackrest_archive"] = show, info.get("archive")
        pg_max = max(x["max"] for x in info["archive"])
        if pg_max < last:
            die(f"pgBackRest's archive ends at {pg_max}, PostgreSQL archived {last}")
        if last not in json.dumps(show):
            die(f"cairn wal show does not mention {last}: {json.dumps(show)[:2000]}")

        restores = {"cairn": [], "pgbackrest": []}
        db = du_bytes(cluster.data, "pg_wal")
        for i in range(a.runs):
            rows = restore_pair(tmp, i, cairn, pgbr, db, verify=(i == 0))
            for k, v in rows.items():
                restores[k].append(v)
            log(f"restore {i + 1}/{a.runs}: " + ", ".join(f"{k} {v['wall_s']:.1f} s ({v['files']} files)"
                                                         for k, v in rows.items()))
        results["restore"] = {k: med(v) for k, v in restores.items()}
        results["repo_bytes_final"] = {"cairn": du_bytes(cairn.repo), "pgbackrest": du_bytes(pgbr.repo)}
    finally:
        pgcluster.tear_down(cluster, tmp, a.keep)

    report(results)
    pgcluster.save(results, os.path.join(WORK, "pgbase-results.json"))


def report(r):
    mb = lambda n: f"{n / 1e6:.1f}"
    s = r["second"]
    print(f"\nPostgreSQL 15, pgbench -i -s {r['scale']}: database {mb(r['db_bytes_initial'])} MB (PGDATA without "
          f"pg_wal); {r['cpus']} CPUs; medians of {r['runs']} run(s) where marked; 2nd = after pgbench -c 2 -t 2000 -n; "
          f"pgBackRest zst level 3, aes-256-cbc, process-max {r['pgbackrest_process_max']}; "
          f"MB/s = database bytes / wall time; repo growth includes the WAL archived meanwhile\n")
    print("| operation | wall s | DB MB/s | client CPU s | peak RSS MB | repo growth MB | notes |")
    print("|---|---|---|---|---|---|---|")

    def row(name, x, notes=""):
        growth = mb(x["repo_growth"]) if x.get("repo_growth") is not None else "-"
        rss = f"{x['rss_mb']:.0f}" if x.get("rss_mb") is not None else "-"
        print(f"| {name} | {x['wall_s']:.2f} | {x['mb_s']:.0f} | {x['cpu_s']:.2f} | {rss} | {growth} | {notes} |")

    def up(x):
        return (f"read {mb(x['bytes_read'])} MB, uploaded {mb(x['uploaded_bytes'])} MB "
                f"({100 * x['uploaded_over_read']:.2f} % of read)")

    row(f"pg_basebackup > /dev/null (x{r['pg_basebackup']['runs']})", r["pg_basebackup"], "the producer alone")
    row("cairn backup, 1st", r["cairn_first"], up(r["cairn_first"]))
    row("pgBackRest full, 1st", r["pgbackrest_first"],
        f"stored {mb(r['pgbackrest_first']['repo_delta'])} MB")
    row(f"cairn backup, 2nd (x{s['cairn']['runs']})", s["cairn"],
        up(s["cairn"]) + f", {100 * s['cairn']['uploaded_bytes'] / r['cairn_first']['uploaded_bytes']:.0f} % "
        f"of the 1st's upload")
    row(f"pgBackRest full, 2nd (x{s['pgbackrest_full']['runs']})", s["pgbackrest_full"],
        f"stored {mb(s['pgbackrest_full']['repo_delta'])} MB")
    row(f"pgBackRest incr, 2nd (x{s['pgbackrest_incr']['runs']})", s["pgbackrest_incr"],
        f"best case: stored {mb(s['pgbackrest_incr']['repo_delta'])} MB, "
        f"{mb(s['pgbackrest_incr']['backup_delta'])} MB of files changed")
    rc, rp = r["restore"]["cairn"], r["restore"]["pgbackrest"]
    row(f"cairn pg restore --latest (x{rc['runs']})", rc, f"{rc['files']:.0f} files ({rc['common_files']:.0f} also in "
        f"pgBackRest's, + backup_manifest, empty tablespace_map), {rc['verified']} checked against backup_manifest; "
        f"pg_verifybackup ok")
    row(f"pgBackRest restore (x{rp['runs']})", rp, f"{rp['files']:.0f} files")
    fr = lambda c, p: f"{c['mb_s'] / p['mb_s']:.2f}x"
    print(f"\ncairn / pgBackRest throughput: 1st backup vs full {fr(r['cairn_first'], r['pgbackrest_first'])}, "
          f"2nd backup vs full {fr(s['cairn'], s['pgbackrest_full'])}, "
          f"2nd backup vs incr {fr(s['cairn'], s['pgbackrest_incr'])}, restore {fr(rc, rp)}")
    print(f"cairn / pg_basebackup throughput: 1st backup {fr(r['cairn_first'], r['pg_basebackup'])}, "
          f"2nd backup {fr(s['cairn'], r['pg_basebackup'])}")
    fb = r["repo_bytes_final"]
    print(f"repositories at the end (all backups + WAL): cairn {mb(fb['cairn'])} MB, "
          f"pgBackRest {mb(fb['pgbackrest'])} MB; archiver: {r['archiver']['archived']} segments, "
          f"{r['archiver']['failed']} failures")


if __name__ == "__main__":
    main()
