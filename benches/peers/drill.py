"""Recovery time of a PostgreSQL restore drill: `cairn drill` against the
same recovery done with pgBackRest (`restore`, then start PostgreSQL and
wait until recovery has ended), in one run on one cluster.

One PostgreSQL 15 cluster (`pgbench -i -s SCALE`) archives every segment to
both tools (pgbase.py's set-up). Both take a full base backup; then
`pgbench -c 2 -t N -n` writes WAL that recovery must replay, and the
archive is drained. Then, --runs times, alternating which goes first:

  cairn    `cairn drill pg` (a configured pg-base source): restore the base
           backup into scratch, stage the WAL, start a temporary server
           (socket only, archive_mode=off, hot_standby=off) and wait until
           it accepts connections, i.e. until recovery has ended — the
           measured RTO — then pg_amcheck --all (reported, not in the RTO).
  pgBackRest  `pgbackrest restore` into a fresh directory (its
           restore_command is `pgbackrest archive-get`), then `postgres`
           started on it with the same overrides, timed until pg_isready
           answers; then the same pg_amcheck --all, timed apart.

RTO = restore + WAL + start for both; the phase breakdown of each is printed.
Runs as root; PostgreSQL, pgBackRest and cairn run as the user cairntest.

Usage: python3 benches/peers/drill.py [--scale 50] [--runs 1] [--transactions 4000]
[--pgbackrest-process-max 2] [--keep]   (results in .work/bench/drill-results.json)
"""
import argparse, json, os, shutil, signal, statistics, subprocess, tempfile, time

import pgbase
import pgcluster
from pgbase import Cairn, Cluster, PgBackRest, STANZA, du_bytes, pg_kw, timed
from pgcluster import PGBIN, PGUSER, die, log

pgcluster.NAME = "drill"


def cairn_drill(cairn, cluster, scratch):
    """One `cairn drill`; returns its record (phases, rto_s) and the wall time of the whole command."""
    with open(cairn.config, "a") as f:
        if "[sources.pg]" not in open(cairn.config).read():
            f.write(f'\n[drill]\nscratch_dir = "{scratch}"\npg_bin_dir = "{PGBIN}"\n\n'
                    f'[sources.pg]\nkind = "pg-base"\nconnect = "host={cluster.sock} port={cluster.port}"\n')
    t, out = timed([cairn.bin, "--config", cairn.config, "--json", "-q", "drill", "pg"], **cairn.kw)
    rec = json.loads(out)[0]
    if not rec["ok"]:
        die(f"cairn drill failed: {rec['failure']}")
    phases = {p["name"]: p["seconds"] for p in rec["phases"]}
    return dict(rto_s=rec["rto_s"], wall_s=t["wall_s"], cpu_s=t["cpu_s"], restore_s=phases["restore"],
                wal_s=phases["wal"], start_s=phases["start"], amcheck_s=phases["amcheck"], details=rec["details"])


def pgbackrest_drill(pgbr, tmp, i):
    """pgbackrest restore, then postgres started on it until recovery ends, then pg_amcheck."""
    pdir = os.path.join(tmp, f"drill{i}-pgbackrest")
    os.makedirs(pdir, mode=0o700)
    shutil.chown(pdir, PGUSER, PGUSER)
    t_restore, _ = pgbr.run(f"--pg1-path={pdir}", "restore")
    port = pgcluster.free_port()
    log_path = os.path.join(pdir, "drill.log")
    kw = pg_kw(pdir)
    t0 = time.monotonic()
    server = subprocess.Popen(
        [f"{PGBIN}/postgres", "-D", pdir, "-c", f"port={port}", "-c", "listen_addresses=", "-c",
         f"unix_socket_directories={pdir}", "-c", "archive_mode=off", "-c", "hot_standby=off", "-c",
         "logging_collector=off"], stdout=open(log_path, "w"), stderr=subprocess.STDOUT, **kw)
    try:
        while subprocess.run([f"{PGBIN}/pg_isready", "-q", "-h", pdir, "-p", str(port), "-d", "postgres"],
                             **kw).returncode != 0:
            if server.poll() is not None:
                die(f"postgres on pgBackRest's restore exited:\n{open(log_path).read()[-3000:]}")
            if time.monotonic() - t0 > 3600:
                die("pgBackRest's restore did not finish recovery within an hour")
            time.sleep(0.1)
        start_s = time.monotonic() - t0
        t_check, _ = timed([f"{PGBIN}/pg_amcheck", "-h", pdir, "-p", str(port), "-U", PGUSER, "--all",
                            "--install-missing"], **kw)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    shutil.rmtree(pdir)
    return dict(rto_s=t_restore["wall_s"] + start_s, restore_s=t_restore["wall_s"], wal_s=0.0, start_s=start_s,
                amcheck_s=t_check["wall_s"], restore_cpu_s=t_restore["cpu_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=50, help="pgbench -i scale (default 50, ~750 MB)")
    ap.add_argument("--runs", type=int, default=1, help="drills per tool (medians; default 1)")
    ap.add_argument("--transactions", type=int, default=4000,
                    help="pgbench -c 2 -t N after the backups: WAL recovery replays (default 4000)")
    ap.add_argument("--pgbackrest-process-max", type=int, default=2, help="pgBackRest process-max (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    a = ap.parse_args()
    pgbase.ensure_deps()
    os.makedirs(pgbase.WORK, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(f"drill bench: signal {s}")))
    tmp = tempfile.mkdtemp(prefix="cairn-drill-bench-", dir="/tmp")
    os.chmod(tmp, 0o755)
    shutil.chown(tmp, PGUSER, PGUSER)
    scratch = os.path.join(tmp, "scratch")
    os.makedirs(scratch)
    shutil.chown(scratch, PGUSER, PGUSER)
    cluster = Cluster(tmp)
    results = {"scale": a.scale, "runs": a.runs, "transactions": a.transactions, "cpus": os.cpu_count(),
               "pgbackrest_process_max": a.pgbackrest_process_max}
    try:
        cairn = Cairn(tmp)
        pgbr = PgBackRest(tmp, cluster, a.pgbackrest_process_max)
        cluster.start(f"{cairn.push_cmd()} && {pgbr.push_cmd()}")
        pgcluster.as_pg(pgbr.base + ["stanza-create"], cwd=pgbr.dir)
        log(f"pgbench -i -s {a.scale} ...")
        cluster.pgbench("-i", "-s", str(a.scale), "-q")
        cluster.drain()
        results["db_bytes"] = du_bytes(cluster.data, "pg_wal")
        log("base backups ...")
        pgbase.cairn_backup(cluster, cairn, results["db_bytes"])
        cluster.drain()
        pgbase.pgbackrest_backup(pgbr, "full", results["db_bytes"])
        before = cluster.archiver()["archived"]
        log(f"pgbench -c 2 -t {a.transactions} -n (WAL to replay) ...")
        cluster.pgbench("-c", "2", "-t", str(a.transactions), "-n")
        cluster.drain()
        results["wal_segments_after_backup"] = cluster.archiver()["archived"] - before
        rows = {"cairn": [], "pgbackrest": []}
        for i in range(a.runs):
            order = ["cairn", "pgbackrest"] if i % 2 == 0 else ["pgbackrest", "cairn"]
            for tool in order:
                subprocess.run(["sync"], check=True)
                if tool == "cairn":
                    rows["cairn"].append(cairn_drill(cairn, cluster, scratch))
                else:
                    rows["pgbackrest"].append(pgbackrest_drill(pgbr, tmp, i))
                r = rows[tool][-1]
                log(f"run {i + 1}: {tool}: RTO {r['rto_s']:.1f} s (restore {r['restore_s']:.1f}, WAL "
                    f"{r['wal_s']:.1f}, start+replay {r['start_s']:.1f}); amcheck {r['amcheck_s']:.1f} s")
        med = lambda xs: {k: (statistics.median(x[k] for x in xs) if isinstance(v, (int, float)) else v)
                          for k, v in xs[0].items()}
        results["cairn"], results["pgbackrest"] = med(rows["cairn"]), med(rows["pgbackrest"])
    finally:
        pgcluster.tear_down(cluster, tmp, a.keep)
    c, p = results["cairn"], results["pgbackrest"]
    print(f"\nPostgreSQL 15, pgbench -i -s {a.scale} ({results['db_bytes'] / 1e6:.0f} MB without pg_wal), then "
          f"pgbench -c 2 -t {a.transactions} ({results['wal_segments_after_backup']} WAL segments to replay); "
          f"{results['cpus']} CPUs; medians of {a.runs} run(s); pgBackRest process-max {a.pgbackrest_process_max}\n")
    print("| tool | RTO s | restore s | WAL staging s | start + replay s | pg_amcheck s (not in RTO) |")
    print("|---|---|---|---|---|---|")
    for name, x in (("cairn drill", c), ("pgBackRest restore + start", p)):
        print(f"| {name} | {x['rto_s']:.2f} | {x['restore_s']:.2f} | {x['wal_s']:.2f} | {x['start_s']:.2f} | "
              f"{x['amcheck_s']:.2f} |")
    print(f"\ncairn RTO / pgBackRest RTO: {c['rto_s'] / p['rto_s']:.2f}")
    pgcluster.save(results, os.path.join(pgbase.WORK, "drill-results.json"))


if __name__ == "__main__":
    main()
