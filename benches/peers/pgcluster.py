"""What the PostgreSQL benchmarks (wal.py, pgbase.py) share: running setup
commands as the unprivileged PostgreSQL user, and a throwaway cluster on a
unix socket. PostgreSQL refuses to run as root; the benchmarks run as root
and switch to PGUSER for every PostgreSQL program."""
import json, os, resource, shutil, socket, subprocess, sys, tempfile, threading, time

PGBIN = "/usr/lib/postgresql/15/bin"
PGUSER = "cairntest"
NAME = "bench"  # the running benchmark's name, for messages


def die(msg):
    sys.exit(f"{NAME} bench: {msg}")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def as_pg(cmd, **kw):
    """Runs an untimed setup command as the PostgreSQL user; returns stdout."""
    r = subprocess.run(["runuser", "-u", PGUSER, "--"] + cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, **kw)
    if r.returncode != 0:
        die(f"failed ({r.returncode}): {' '.join(cmd)}\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout


#: Peak resident set size (KiB) of the last run_timed call's process tree: the largest of the process and its
#: waited-for descendants (getrusage's ru_maxrss through wait4), so a producer it runs counts too.
LAST_MAXRSS_KB = 0


def run_timed(cmd, timeout, stdout=subprocess.PIPE, **kw):
    """Runs cmd once; returns (wall, user CPU, system CPU) seconds, CPU of it and its waited-for children, and
    its stdout (bytes, empty unless piped). Non-zero exit aborts with the end of its output. Sets LAST_MAXRSS_KB."""
    global LAST_MAXRSS_KB
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_f if stdout == subprocess.PIPE else stdout,
                             stderr=err_f, **kw)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        timed_out = not timer.is_alive()
        timer.cancel()
        if timed_out:
            die(f"timed out after {timeout} s: {' '.join(cmd)}")
        p.returncode = os.waitstatus_to_exitcode(status)
        LAST_MAXRSS_KB = ru.ru_maxrss
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if p.returncode != 0:
        text = (out + err).decode(errors="replace")[-3000:]
        die(f"failed ({p.returncode}): {' '.join(cmd)}\n{text}")
    return wall, ru.ru_utime, ru.ru_stime, out if stdout == subprocess.PIPE else b""


def tear_down(cluster, tmp, keep):
    """Stops the benchmark's cluster and removes its temporary directory, or says where it was kept."""
    cluster.stop()
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def save(results, path):
    """Writes the raw figures as JSON and says where."""
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nraw figures: {path}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL 15 cluster, unix socket only. `start` runs initdb with `initdb_args`, appends
    `conf` (plus the socket and port) to postgresql.conf and starts the server."""

    def __init__(self, tmp):
        self.data = os.path.join(tmp, "pgdata")
        self.sock = os.path.join(tmp, "pgsock")
        self.logfile = os.path.join(tmp, "postgres.log")
        self.port = free_port()
        self.running = False

    def initdb_and_start(self, conf, initdb_args=(), dirs=()):
        for d in (self.sock,) + tuple(dirs):
            os.makedirs(d)
            shutil.chown(d, PGUSER, PGUSER)
        as_pg([f"{PGBIN}/initdb", "-D", self.data, "--auth=trust", "--encoding=UTF8", "--locale=C"]
              + list(initdb_args) + ["--no-instructions"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.sock}'\nport = {self.port}\n{conf}")
        as_pg([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "120", "start"])
        self.running = True

    def stop(self):
        if not self.running:
            return
        for mode in ("fast", "immediate"):
            r = subprocess.run(["runuser", "-u", PGUSER, "--", f"{PGBIN}/pg_ctl", "-D", self.data, "-m", mode,
                                "-w", "-t", "60", "stop"], capture_output=True)
            if r.returncode == 0:
                break
        self.running = False

    def sql(self, query):
        return as_pg([f"{PGBIN}/psql", "-h", self.sock, "-p", str(self.port), "-d", "postgres", "-X", "-A", "-t",
                      "-q", "-v", "ON_ERROR_STOP=1", "-c", query]).strip()

    def pgbench(self, *args):
        return as_pg([f"{PGBIN}/pgbench", "-h", self.sock, "-p", str(self.port)] + list(args) + ["postgres"])
