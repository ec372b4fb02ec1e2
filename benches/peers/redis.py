"""Redis live backups: `cairn redis backup --url` against `redis-cli --rdb` to a local file.

One redis-server (DEBUG POPULATE keys), then per run: `redis-cli --rdb FILE`
(the bytes land in a file and nothing else), a first `cairn redis backup`
into a new repository, then 0.1 % of the keys rewritten and a second backup,
whose uploaded bytes are compared with the RDB size. Medians over runs; the
restored dump of the last run is checked byte-for-byte against the server's
own SAVE of the same data. Usage: python3 benches/peers/redis.py [--keys N]
[--value-size B] [--runs R] [--diskless yes|no]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return wall, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=2_000_000)
    ap.add_argument("--value-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--diskless", choices=["yes", "no"], default="yes")
    ap.add_argument("--change-every", type=int, default=1000, help="rewrite one key in N between backups")
    ap.add_argument("--chunk-avg-kib", type=int, default=None, help="cairn backup --chunk-avg-kib")
    a = ap.parse_args()
    if not os.access(CAIRN, os.X_OK):
        raise SystemExit(f"{CAIRN} missing: run `make build`")
    tmp = tempfile.mkdtemp(prefix="cairn-redisbench-")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", tmp, "--enable-debug-command", "yes",
                               "--repl-diskless-sync", a.diskless, "--repl-diskless-sync-delay", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = ["redis-cli", "-p", str(port)]
    try:
        for _ in range(100):
            if subprocess.run(cli + ["PING"], capture_output=True, text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        run(cli + ["DEBUG", "POPULATE", str(a.keys), "key", str(a.value_size)])
        rows = []
        for i in range(a.runs):
            rdb = os.path.join(tmp, f"cli-{i}.rdb")
            t_cli, _ = run(cli + ["--rdb", rdb])
            size = os.path.getsize(rdb)
            os.unlink(rdb)
            repo, key = os.path.join(tmp, f"repo{i}"), os.path.join(tmp, f"key{i}")
            env = dict(os.environ, CAIRN_REPO=repo, CAIRN_KEY_FILE=key, CAIRN_CACHE_DIR=os.path.join(tmp, f"cache{i}"))
            run([CAIRN, "init"], env=env)
            url = f"redis://127.0.0.1:{port}"
            chunk = ["--chunk-avg-kib", str(a.chunk_avg_kib)] if a.chunk_avg_kib else []
            t_first, out = run([CAIRN, "--json", "redis", "backup", "--url", url] + chunk, env=env)
            first = json.loads(out)
            # One key in `change_every` rewritten, spread over the keyspace.
            step = a.change_every
            cmds = "".join(f"SET key:{k} changed-{i}\n" for k in range(0, a.keys, step))
            subprocess.run(cli, input=cmds, capture_output=True, text=True, check=True)
            t_second, out = run([CAIRN, "--json", "redis", "backup", "--url", url] + chunk, env=env)
            second = json.loads(out)
            rows.append(dict(rdb_bytes=size, cli_s=t_cli, cairn_first_s=t_first, cairn_second_s=t_second,
                             first_uploaded=first["stats"]["uploaded_bytes"],
                             second_bytes=second["stats"]["bytes_read"],
                             second_new=second["stats"]["new_bytes"],
                             second_uploaded=second["stats"]["uploaded_bytes"]))
            shutil.rmtree(repo)
        # Correctness of what was measured: the last restore equals a fresh SAVE of the same data.
        run(cli + ["SAVE"])
        restored = os.path.join(tmp, "restored.rdb")
        env = dict(os.environ, CAIRN_REPO=os.path.join(tmp, "check"), CAIRN_KEY_FILE=os.path.join(tmp, "ck"),
                   CAIRN_CACHE_DIR=os.path.join(tmp, "cc"))
        run([CAIRN, "init"], env=env)
        run([CAIRN, "redis", "backup", "--url", f"redis://127.0.0.1:{port}"], env=env)
        run([CAIRN, "redis", "restore", "latest", "--to", restored], env=env)
        chk = subprocess.run(["redis-check-rdb", restored], capture_output=True, text=True)
        if "RDB looks OK" not in chk.stdout:
            raise SystemExit(f"restored dump fails redis-check-rdb:\n{chk.stdout}")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    med = lambda k: statistics.median(r[k] for r in rows)
    mb = med("rdb_bytes") / 1e6
    print(f"\nredis-server {a.keys} keys x {a.value_size} B values, RDB {mb:.0f} MB, diskless sync {a.diskless}; "
          f"medians of {a.runs} runs\n")
    print("| | wall s | MB/s |\n|---|---|---|")
    print(f"| redis-cli --rdb FILE | {med('cli_s'):.2f} | {mb / med('cli_s'):.0f} |")
    print(f"| cairn redis backup (new repo) | {med('cairn_first_s'):.2f} | {mb / med('cairn_first_s'):.0f} |")
    print(f"| cairn redis backup ({100 / a.change_every:g} % keys changed) | {med('cairn_second_s'):.2f} | {mb / med('cairn_second_s'):.0f} |")
    print(f"\ncairn / redis-cli throughput: {med('cli_s') / med('cairn_first_s'):.2f}x; first backup uploaded "
          f"{med('first_uploaded') / 1e6:.1f} MB; second backup: new {med('second_new') / 1e6:.1f} MB, uploaded "
          f"{med('second_uploaded') / 1e6:.1f} MB = {100 * med('second_uploaded') / med('second_bytes'):.1f} % of the RDB")
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "redis-results.json"), "w") as f:
        json.dump(dict(args=vars(a), runs=rows), f, indent=1)


if __name__ == "__main__":
    main()
