"""cairn against restic, borg and the physical limits, same bytes, same run.

Every figure is wall-clock seconds and peak RSS from GNU time for one whole
command; throughput is corpus bytes / seconds. Ratios are only meaningful
within one run: peers.md explains why.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench")


def build_corpus(path, size_mb):
    """A tar of system binaries and text, about size_mb MB."""
    if os.path.exists(path) and abs(os.path.getsize(path) - size_mb * 1e6) < 0.2 * size_mb * 1e6:
        return
    budget, files = size_mb * 1_000_000, []
    for top in ["/usr/bin", "/usr/lib", "/usr/share", "/usr/libexec", "/usr/sbin", "/usr/include", "/opt", "/root/.rustup"]:
        for dirpath, dirnames, names in os.walk(top):
            dirnames.sort()
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                try:
                    s = os.path.getsize(p)
                except OSError:
                    continue
                if s > 64 << 20 or not os.access(p, os.R_OK):
                    continue
                files.append(p)
                budget -= s + 512
                if budget <= 0:
                    break
            if budget <= 0:
                break
        if budget <= 0:
            break
    lst = path + ".list"
    with open(lst, "w") as f:
        f.write("\n".join(files) + "\n")
    subprocess.run(["tar", "-cf", path, "--no-recursion", "-T", lst], check=True, stderr=subprocess.DEVNULL)


def timed(cmd, env=None, stdin=None, stdout=None):
    """Runs cmd under GNU time; returns (seconds, peak RSS MB)."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    full = ["/usr/bin/time", "-f", "%e %M", "-o", tf.name] + cmd
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
    fout = open(stdout, "wb") if stdout else subprocess.DEVNULL
    t = time.monotonic()
    r = subprocess.run(full, env=env, stdin=fin, stdout=fout, stderr=subprocess.PIPE)
    wall = time.monotonic() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode(errors='replace')[-2000:]}")
    e, m = open(tf.name).read().split()[-2:]
    os.unlink(tf.name)
    return max(float(e), 0.001) if float(e) > 0 else wall, int(m) / 1024


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_tool(name, corpus, work):
    """name is cairn, restic, borg, or cairn@LABEL=PATH: another cairn binary
    (a before/after comparison in one run)."""
    cairn = CAIRN
    if name.startswith("cairn@"):
        name, cairn = name.split("=", 1)
    d = os.path.join(work, name.replace("@", "-"))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    env = dict(os.environ)
    repo = os.path.join(d, "repo")
    if name.startswith("cairn"):
        env.update(CAIRN_REPO=repo, CAIRN_KEY_FILE=os.path.join(d, "key"), CAIRN_CACHE_DIR=os.path.join(d, "cache"))
        subprocess.run([cairn, "init", "-q"], env=env, check=True)
        backup = [cairn, "backup", "-q", "--source", "corpus", corpus]
        restore = [cairn, "restore", "-q", "latest", "--to", "-"]
        stdin = None
    elif name == "restic":
        env.update(RESTIC_PASSWORD="bench-password", RESTIC_REPOSITORY=repo, RESTIC_CACHE_DIR=os.path.join(d, "cache"))
        subprocess.run(["restic", "init", "-q"], env=env, check=True)
        backup = ["restic", "backup", "-q", "--stdin", "--stdin-filename", "x.tar"]
        restore = ["restic", "dump", "-q", "latest", "x.tar"]
        stdin = corpus
    else:
        env.update(BORG_PASSPHRASE="bench-password", BORG_REPO=repo, BORG_CACHE_DIR=os.path.join(d, "cache"),
                   BORG_CONFIG_DIR=os.path.join(d, "config"), BORG_SECURITY_DIR=os.path.join(d, "sec"))
        subprocess.run(["borg", "init", "-e", "repokey-blake2"], env=env, check=True)
        backup = ["borg", "create", "--compression", "zstd,3", "::{now:%H%M%S%f}", "-"]
        restore = None
        stdin = corpus
    b_s, b_rss = timed(backup, env=env, stdin=stdin)
    stored = du(repo)
    if name == "borg":
        names = subprocess.run(["borg", "list", "--short"], env=env, check=True, capture_output=True, text=True).stdout.split()
        restore = ["borg", "extract", "--stdout", "::" + names[-1]]
    r_s, r_rss = timed(restore, env=env)
    rb_s, rb_rss = timed(backup, env=env, stdin=stdin)
    return dict(backup_s=b_s, backup_rss_mb=b_rss, restore_s=r_s, restore_rss_mb=r_rss, rebackup_s=rb_s,
                rebackup_rss_mb=rb_rss, stored_bytes=stored, stored_after_rebackup=du(repo))


def limits(corpus):
    out = {}
    for label, cmd in [("zstd -T2 -3", ["zstd", "-q", "-T2", "-3", "-c", corpus]),
                       ("zstd -T1 -3", ["zstd", "-q", "-T1", "-3", "-c", corpus]),
                       ("zstd -T2 -1", ["zstd", "-q", "-T2", "-1", "-c", corpus]),
                       ("b3sum 1 thread", ["b3sum", "--num-threads", "1", corpus])]:
        s, _ = timed(cmd)
        out[label] = s
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tools", default="cairn,restic,borg",
                    help="comma list of cairn, restic, borg and cairn@LABEL=PATH (another cairn binary)")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    corpus = os.path.join(WORK, "corpus.tar")
    build_corpus(corpus, a.size_mb)
    size = os.path.getsize(corpus)
    subprocess.run(["cat", corpus], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    results = {"corpus_bytes": size, "runs": a.runs, "tools": {}, "limits": {}}
    for _ in range(a.runs):
        for k, v in limits(corpus).items():
            results["limits"].setdefault(k, []).append(v)
        for t in a.tools.split(","):
            r = run_tool(t, corpus, WORK)
            t = t.split("=", 1)[0]
            for k, v in r.items():
                results["tools"].setdefault(t, {}).setdefault(k, []).append(v)
    med = lambda xs: statistics.median(xs)
    mb = size / 1e6
    print(f"\ncorpus: {size/1e6:.0f} MB tar of system binaries and text; medians of {a.runs} run(s)\n")
    print("| tool | backup MB/s | restore MB/s | re-backup MB/s | stored MB | backup RSS MB | restore RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for t, r in results["tools"].items():
        print(f"| {t} | {mb/med(r['backup_s']):.0f} | {mb/med(r['restore_s']):.0f} | {mb/med(r['rebackup_s']):.0f} | "
              f"{med(r['stored_bytes'])/1e6:.1f} | {med(r['backup_rss_mb']):.0f} | {med(r['restore_rss_mb']):.0f} |")
    for k, v in results["limits"].items():
        print(f"| limit: {k} | {mb/med(v):.0f} | | | | | |")
    if "cairn" in results["tools"]:
        c = results["tools"]["cairn"]
        print()
        for peer in [p for p in results["tools"] if p != "cairn"]:
            p = results["tools"][peer]
            print(f"cairn / {peer}: backup {med(p['backup_s'])/med(c['backup_s']):.2f}x, "
                  f"restore {med(p['restore_s'])/med(c['restore_s']):.2f}x, "
                  f"re-backup {med(p['rebackup_s'])/med(c['rebackup_s']):.2f}x, "
                  f"stored size {med(c['stored_bytes'])/med(p['stored_bytes']):.3f}x")
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nraw figures: {os.path.join(WORK, 'results.json')}")


if __name__ == "__main__":
    main()
