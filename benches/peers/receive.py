"""Streaming WAL: `cairn pg receive` into a local repository against
`pg_receivewal` writing to a local directory, in one run on one cluster.

One PostgreSQL 15 cluster (`pgbench -i -s SCALE`, synchronous_commit = on,
no archiving). Each case runs `pgbench -c CLIENTS -j CLIENTS -T SECONDS -n`
with at most one receiver streaming from a physical slot:

  none              no receiver: the baseline commit latency and TPS.
  pg_receivewal     `pg_receivewal -D DIR --slot S --status-interval 1`,
                    asynchronous (it fsyncs at segment ends).
  cairn             `cairn pg receive --slot S` (flush interval 1 s),
                    asynchronous.
  pg_receivewal sync  the same with --synchronous, named in
                    synchronous_standby_names: a commit waits for its fsync.
  cairn sync        `cairn pg receive --synchronous`, named likewise: a
                    commit waits until its WAL is durable in the repository.

Per case: TPS and average latency (pgbench), WAL written per second, the
receiver's lag behind pg_current_wal_lsn() sampled every second from
pg_stat_replication (write = received, flush = durable: in the directory
for pg_receivewal, in the repository for cairn) — the largest write lag in
the first and the last third of the run, to see whether it grows, and the
largest flush lag — the time to catch up once pgbench stops, and the
receiver's CPU (user+sys, from wait4).
"Added latency" is a case's average latency minus the baseline's; the
issue's target is cairn sync <= 1.5 x pg_receivewal sync.

Runs as root; PostgreSQL, pg_receivewal and cairn run as the user
cairntest (created if missing).

Usage: python3 benches/peers/receive.py [--scale 10] [--seconds 60]
[--clients 4] [--cases none,pg_receivewal,cairn,pg_receivewal-sync,cairn-sync]
[--keep]   (results in .work/bench/receive-results.json)
"""
import argparse, os, re, shutil, signal, subprocess, tempfile, time

import pgbase
import pgcluster
from pgbase import Cairn, pg_kw
from pgcluster import PGBIN, PGUSER, die, log

pgcluster.NAME = "receive"

CASES = ["none", "pg_receivewal", "cairn", "pg_receivewal-sync", "cairn-sync"]


class Cluster(pgcluster.Cluster):
    def start(self):
        self.initdb_and_start("""
# cairn receive benchmark
wal_level = replica
archive_mode = off
max_wal_senders = 4
max_replication_slots = 4
synchronous_commit = on
autovacuum = off
wal_sender_timeout = 60s
""", initdb_args=["--wal-segsize=16"])

    def lsn(self):
        return int(self.sql("select pg_current_wal_lsn() - '0/0'"))

    def standby(self, name):
        """(write, flush) LSNs the receiver `name` reported, as integers; None when it is not connected."""
        row = self.sql(f"select coalesce(write_lsn - '0/0', 0) || '|' || coalesce(flush_lsn - '0/0', 0) "
                       f"from pg_stat_replication where application_name = '{name}'")
        return tuple(int(float(x)) for x in row.split("|")) if row else None

    def sync_standby(self, name):
        self.sql(f"alter system set synchronous_standby_names = '{name}'")
        self.sql("select pg_reload_conf()")


def receiver(case, tmp, cluster, cairn):
    """Starts the case's receiver; returns (process, application_name) or (None, None)."""
    if case == "none":
        return None, None
    sync = case.endswith("-sync")
    if case.startswith("pg_receivewal"):
        d = os.path.join(tmp, f"receivewal-{case}")
        os.makedirs(d)
        shutil.chown(d, PGUSER, PGUSER)
        slot = "bench_prw"
        cmd = [f"{PGBIN}/pg_receivewal", "-h", cluster.sock, "-p", str(cluster.port), "-U", PGUSER, "-D", d,
               "--slot", slot, "--status-interval", "1", "--no-loop"] + (["--synchronous"] if sync else [])
        cluster.sql(f"select pg_create_physical_replication_slot('{slot}', true) "
                    f"where not exists (select 1 from pg_replication_slots where slot_name = '{slot}')")
        name = "pg_receivewal"
    else:
        # A stanza per case: each starts at the server's current segment.
        cmd = [cairn.bin, "--config", cairn.config, "--json", "pg", "receive", "--stanza", case, "--connect",
               f"host={cluster.sock} port={cluster.port} user={PGUSER}", "--slot", "bench_cairn", "--create-slot"]
        cmd += ["--synchronous"] if sync else []
        name = "cairn"
    kw = pg_kw(tmp)
    if "RUST_LOG" in os.environ:  # e.g. cairn_engine::pg::receive=debug: each flush and how long it took
        kw["env"]["RUST_LOG"] = os.environ["RUST_LOG"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, f"{case}.log"), "w"), **kw)
    deadline = time.monotonic() + 60
    while cluster.standby(name) is None:
        if p.poll() is not None or time.monotonic() > deadline:
            die(f"{case} did not start streaming:\n{open(os.path.join(tmp, f'{case}.log')).read()[-2000:]}")
        time.sleep(0.2)
    now = cluster.lsn()
    while cluster.standby(name)[0] < now:
        if p.poll() is not None or time.monotonic() > deadline:
            die(f"{case} did not catch up before the run")
        time.sleep(0.2)
    if sync:
        cluster.sync_standby(name)
    return p, name


def stop(p):
    """SIGTERM (SIGINT for pg_receivewal, which flushes on it); returns (CPU seconds, stdout)."""
    p.send_signal(signal.SIGTERM if "cairn" in p.args[0] else signal.SIGINT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime, out.decode(errors="replace")


def run_case(case, a, tmp, cluster, cairn):
    log(f"case {case}: pgbench -c {a.clients} -T {a.seconds} ...")
    cluster.sql("checkpoint")
    p, name = receiver(case, tmp, cluster, cairn)
    start_lsn, t0 = cluster.lsn(), time.monotonic()
    bench = subprocess.Popen(["runuser", "-u", PGUSER, "--", f"{PGBIN}/pgbench", "-h", cluster.sock, "-p",
                              str(cluster.port), "-n", "-c", str(a.clients), "-j", str(a.clients), "-T",
                              str(a.seconds), "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    samples = []  # (seconds into the run, write lag bytes, flush lag bytes)
    while bench.poll() is None:
        time.sleep(1)
        if name:
            now, s = cluster.lsn(), cluster.standby(name)
            if s:
                samples.append((time.monotonic() - t0, now - s[0], now - s[1]))
    out = bench.stdout.read()
    if bench.returncode != 0:
        die(f"pgbench failed:\n{out[-2000:]}")
    wall = time.monotonic() - t0
    end_lsn = cluster.lsn()
    row = dict(case=case, tps=float(re.search(r"tps = ([\d.]+)", out).group(1)),
               latency_ms=float(re.search(r"latency average = ([\d.]+) ms", out).group(1)),
               wal_mb_s=(end_lsn - start_lsn) / wall / 1e6)
    if name:
        # Caught up: durable, except for asynchronous pg_receivewal, whose flush
        # position moves only when a segment is closed: received.
        pos = 0 if case == "pg_receivewal" else 1
        t1 = time.monotonic()
        while (s := cluster.standby(name)) is None or s[pos] < end_lsn:
            if time.monotonic() - t1 > 300:
                die(f"{case} did not catch up within 300 s: {s} < {end_lsn}")
            time.sleep(0.1)
        row["catch_up_s"] = time.monotonic() - t1
        third = max(1, len(samples) // 3)
        row["write_lag_first_third_max_mb"] = max(x[1] for x in samples[:third]) / 1e6
        row["write_lag_last_third_max_mb"] = max(x[1] for x in samples[-third:]) / 1e6
        row["flush_lag_max_mb"] = max(x[2] for x in samples) / 1e6
        if case.endswith("-sync"):
            cluster.sync_standby("")
        row["receiver_cpu_s"], report = stop(p)
        if p.returncode != 0:
            die(f"{case} exited {p.returncode}:\n{open(os.path.join(tmp, f'{case}.log')).read()[-2000:]}")
        if "cairn" in case:
            row["cairn_report"] = report
        deadline = time.monotonic() + 30
        while cluster.sql("select count(*) from pg_replication_slots where active") != "0":
            if time.monotonic() > deadline:
                die("a slot stayed active after its receiver stopped")
            time.sleep(0.2)
        cluster.sql("select pg_drop_replication_slot(slot_name) from pg_replication_slots")
    log(f"  {row}")
    return row


def report(rows):
    base = next((r for r in rows if r["case"] == "none"), None)
    print(f"\n{'case':<20}{'TPS':>8}{'latency ms':>12}{'added ms':>10}{'WAL MB/s':>10}{'write lag MB':>16}"
          f"{'flush lag MB':>14}{'catch-up s':>12}{'CPU s':>8}")
    for r in rows:
        added = f"{r['latency_ms'] - base['latency_ms']:.3f}" if base else "-"
        lag = (f"{r['write_lag_first_third_max_mb']:.2f}->{r['write_lag_last_third_max_mb']:.2f}"
               if "write_lag_last_third_max_mb" in r else "-")
        flush = f"{r['flush_lag_max_mb']:.2f}" if "flush_lag_max_mb" in r else "-"
        print(f"{r['case']:<20}{r['tps']:>8.0f}{r['latency_ms']:>12.3f}{added:>10}{r['wal_mb_s']:>10.2f}{lag:>16}"
              f"{flush:>14}{r.get('catch_up_s', 0):>12.2f}{r.get('receiver_cpu_s', 0):>8.1f}")
    by = {r["case"]: r for r in rows}
    if base and "cairn-sync" in by and "pg_receivewal-sync" in by:
        c = by["cairn-sync"]["latency_ms"] - base["latency_ms"]
        p = by["pg_receivewal-sync"]["latency_ms"] - base["latency_ms"]
        print(f"\nlatency added by the synchronous standby: cairn {c:.3f} ms, pg_receivewal {p:.3f} ms "
              f"({c / p:.2f}x; target <= 1.5x)" if p > 0 else "")
    print("write lag: the largest in the first third -> the last third of the run (growing = not keeping up); "
          "flush lag: the largest (pg_receivewal without --synchronous fsyncs only at segment ends); "
          "catch-up: from pgbench's end until the run's WAL is durable (received, for asynchronous pg_receivewal)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    ap.add_argument("--seconds", type=int, default=60, help="pgbench -T per case (default 60)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c and -j (default 4)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    a = ap.parse_args()
    cases = a.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        die(f"unknown cases {unknown}")
    pgbase.ensure_deps()
    os.makedirs(pgbase.WORK, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(f"receive bench: signal {s}")))
    tmp = tempfile.mkdtemp(prefix="cairn-receive-bench-", dir="/tmp")
    os.chmod(tmp, 0o755)
    shutil.chown(tmp, PGUSER, PGUSER)
    cluster = Cluster(tmp)
    results = {"scale": a.scale, "seconds": a.seconds, "clients": a.clients, "cpus": os.cpu_count(), "cases": []}
    try:
        cairn = Cairn(tmp)
        cluster.start()
        log(f"pgbench -i -s {a.scale} ...")
        cluster.pgbench("-i", "-s", str(a.scale), "-q")
        for case in cases:
            results["cases"].append(run_case(case, a, tmp, cluster, cairn))
    finally:
        pgcluster.tear_down(cluster, tmp, a.keep)
    report(results["cases"])
    pgcluster.save(results, os.path.join(pgbase.WORK, "receive-results.json"))


if __name__ == "__main__":
    main()
