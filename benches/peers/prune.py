"""Retention and garbage collection: cairn vs restic 0.14 vs borg 1.2 on
the same history, in one run.

The history: V versions of a changing corpus of C GiB, each version a
stream (stdin) of 4 MiB blocks in which a fraction r of the blocks is
replaced by new content. Blocks are assembled from a pool of 4 KiB random
pieces, in an order that differs per block, so no chunker (minimum chunk
sizes are 256 KiB and more) finds anything shared between two blocks.

For each of two histories (the second's repository at least 4x the
first's), each tool backs up every version into a fresh repository, then:
  1. forgets the oldest 10 versions and prunes
     (cairn `forget --keep-last V-10 --prune`, restic `forget --keep-last
     V-10 --prune`, borg `prune --keep-last V-10` + `compact`);
  2. forgets one more version and prunes.
Figures: wall time and peak RSS (GNU time) of each step, and the bytes it
reclaimed (repository size before and after).

With --sizes (for example 1,9), the histories differ in corpus size
instead of rate, and each version replaces the same number of blocks
(--changed, default 12: 48 MiB) at every size: the one-version prune then
has the same change to collect in a repository several times larger, which
is what "cost in proportion to change" is about.

Usage: python3 benches/peers/prune.py [--gib 1] [--versions 30]
           [--rates 0.05,0.32 | --sizes 1,9 [--changed 12]]
           [--tools cairn,restic,borg]
Results: .work/bench/prune-results.json, and a table on stdout.
"""
import argparse, json, os, random, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench", "prune")
BLOCK = 4 << 20
PIECE = 4096
_POOL_RNG = random.Random(7)
POOL = [_POOL_RNG.randbytes(PIECE) for _ in range(4096)]


def block(bid):
    """4 MiB of pieces chosen by a per-block LCG: unique per block id."""
    x = (bid * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF
    out = []
    for _ in range(BLOCK // PIECE):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append(POOL[x >> 52])
    return b"".join(out)


def history(gib, versions, rate, seed, changed=None):
    """Block id lists, one per version: a share `rate` of the blocks, or
    `changed` blocks, replaced per version."""
    n = gib * (1 << 30) // BLOCK
    ids = list(range(n))
    nxt = n
    rng = random.Random(seed)
    out = []
    for v in range(versions):
        if v:
            for pos in rng.sample(range(n), changed or max(1, int(n * rate))):
                ids[pos] = nxt
                nxt += 1
        out.append(list(ids))
    return out


def feed(cmd, env, ids):
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        for b in ids:
            p.stdin.write(block(b))
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read()
    if p.wait() != 0:
        sys.exit(f"{cmd[0]} backup failed: {err.decode()[-2000:]}")


def timed(cmd, env):
    """Wall seconds and peak RSS (KiB) of one command, via GNU time."""
    t = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t
    if r.returncode != 0:
        sys.exit(f"{cmd}: {r.stderr[-3000:]}")
    rss = int(r.stderr.strip().splitlines()[-1])
    return wall, rss


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except FileNotFoundError:
                pass
    return total


class Tool:
    def __init__(self, name, work):
        self.name, self.work = name, os.path.join(work, name)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.repo = os.path.join(self.work, "repo")
        self.env = dict(os.environ)

    def steps(self, keep):
        raise NotImplementedError


class Cairn(Tool):
    def __init__(self, work):
        super().__init__("cairn", work)
        self.env.update(CAIRN_REPO=self.repo, CAIRN_KEY_FILE=os.path.join(self.work, "key"),
                        CAIRN_CACHE_DIR=os.path.join(self.work, "cache"))
        subprocess.run([CAIRN, "init", "--gc-min-age", "0", "-q"], env=self.env, check=True)

    def backup_cmd(self):
        return [CAIRN, "backup", "-q", "--source", "corpus", "-"]

    def steps(self, keep):
        return [[CAIRN, "-q", "forget", "--keep-last", str(keep), "--prune"]]


class Restic(Tool):
    def __init__(self, work):
        super().__init__("restic", work)
        self.env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD="bench",
                        RESTIC_CACHE_DIR=os.path.join(self.work, "cache"))
        subprocess.run(["restic", "init", "-q"], env=self.env, check=True)

    def backup_cmd(self):
        return ["restic", "backup", "-q", "--stdin", "--stdin-filename", "corpus"]

    def steps(self, keep):
        return [["restic", "forget", "-q", "--keep-last", str(keep), "--prune"]]


class Borg(Tool):
    def __init__(self, work):
        super().__init__("borg", work)
        self.env.update(BORG_REPO=self.repo, BORG_PASSPHRASE="bench",
                        BORG_BASE_DIR=os.path.join(self.work, "home"))
        self.n = 0
        subprocess.run(["borg", "init", "-e", "repokey"], env=self.env, check=True)

    def backup_cmd(self):
        self.n += 1
        return ["borg", "create", "--stdin-name", "corpus", f"::v{self.n:04d}", "-"]

    def steps(self, keep):
        return [["borg", "prune", "--keep-last", str(keep)], ["borg", "compact"]]


TOOLS = {"cairn": Cairn, "restic": Restic, "borg": Borg}


def run_history(label, hist, tools, work):
    rows = []
    for name in tools:
        t = TOOLS[name](os.path.join(work, label))
        started = time.time()
        for ids in hist:
            feed(t.backup_cmd(), t.env, ids)
        backup_s = time.time() - started
        size0 = du(t.repo)
        row = {"history": label, "tool": name, "versions": len(hist), "backup_s": round(backup_s, 1),
               "repo_bytes": size0}
        for step, keep in (("forget10", len(hist) - 10), ("forget1", len(hist) - 11)):
            before = du(t.repo)
            wall, rss = 0.0, 0
            for cmd in t.steps(keep):
                w, r = timed(cmd, t.env)
                wall += w
                rss = max(rss, r)
            row[step] = {"s": round(wall, 2), "rss_mib": round(rss / 1024, 1), "reclaimed": before - du(t.repo)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(t.work, ignore_errors=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--versions", type=int, default=30)
    ap.add_argument("--rates", default="0.05,0.32")
    ap.add_argument("--sizes", help="corpus sizes in GiB (e.g. 1,9), each version replacing --changed blocks")
    ap.add_argument("--changed", type=int, default=12)
    ap.add_argument("--tools", default="cairn,restic,borg")
    a = ap.parse_args()
    tools = a.tools.split(",")
    os.makedirs(WORK, exist_ok=True)
    rows = []
    if a.sizes:
        for gib in (int(x) for x in a.sizes.split(",")):
            hist = history(gib, a.versions, 0, seed=42, changed=a.changed)
            rows += run_history(f"{gib:02d}GiB", hist, tools, WORK)
    else:
        for i, rate in enumerate(float(x) for x in a.rates.split(",")):
            hist = history(a.gib, a.versions, rate, seed=42 + i)
            rows += run_history(f"r{rate}", hist, tools, WORK)
    with open(os.path.join(ROOT, ".work", "bench", "prune-results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| history | tool | repo | backups | forget 10 + prune | RSS | reclaimed | forget 1 + prune | RSS | reclaimed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        f10, f1 = r["forget10"], r["forget1"]
        print(f"| {r['history']} | {r['tool']} | {r['repo_bytes'] / 2**30:.2f} GiB | {r['backup_s']} s | "
              f"{f10['s']} s | {f10['rss_mib']} MiB | {f10['reclaimed'] / 2**30:.2f} GiB | "
              f"{f1['s']} s | {f1['rss_mib']} MiB | {f1['reclaimed'] / 2**30:.3f} GiB |")
    by = {(r["history"], r["tool"]): r for r in rows}
    labels = sorted({r["history"] for r in rows})
    if "cairn" in tools and "restic" in tools:
        for l in labels:
            c, rs = by[(l, "cairn")], by[(l, "restic")]
            print(f"{l}: restic/cairn prune time, forget 10: {rs['forget10']['s'] / c['forget10']['s']:.2f}x, "
                  f"forget 1: {rs['forget1']['s'] / c['forget1']['s']:.2f}x")
    if len(labels) == 2:
        for name in tools:
            a0, b0 = by[(labels[0], name)], by[(labels[1], name)]
            print(f"{name}: repo {b0['repo_bytes'] / a0['repo_bytes']:.2f}x bigger, one-version prune "
                  f"{b0['forget1']['s'] / a0['forget1']['s']:.2f}x slower")


if __name__ == "__main__":
    main()
