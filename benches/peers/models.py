"""Model snapshots: what each version adds to the repository, cairn vs restic
vs borg, same tars, same run.

v1: a tar of 8 float32 tensors of 64 MiB and a config file.
v2: a fine-tune: tensors 2 and 5 rewritten, four 512 KiB regions of tensor 7
    changed (3 % of it).
v3: v2 with a small README added at the front of the archive.

Each tool backs up v1, v2, v3 as a stream (stdin) into a fresh repository;
the figure is the growth of the repository directory per version, and the
wall time. cairn runs with its default chunk size and with --chunk-avg-kib
256 (the setting README recommends for model weights).

Usage: python3 benches/peers/models.py [--runs 1]   (installs restic and
borgbackup with apt when missing; results in .work/bench/models-results.json)
"""
import argparse, json, os, random, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAIRN = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, ".work", "bench", "models")
MIB = 1 << 20


def tensor(n, seed):
    """float32 values of magnitude ~0.008-0.03 with random signs and
    mantissas: the exponent byte repeats, as in real weights."""
    b = bytearray(random.Random(seed).randbytes(n))
    table = bytes((x & 0x80) | 0x3C for x in range(256))
    b[3::4] = bytes(b[3::4]).translate(table)
    return bytes(b)


def tar(dirpath, out, members):
    subprocess.run(["tar", "-cf", out, "-C", dirpath] + members, check=True)


def build(work):
    d = os.path.join(work, "model")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    names = ["config.json"] + [f"layer{i}.bin" for i in range(8)]
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"hidden": 4096, "layers": 8}\n')
    for i in range(8):
        with open(os.path.join(d, f"layer{i}.bin"), "wb") as f:
            f.write(tensor(64 * MIB, 100 + i))
    tar(d, os.path.join(work, "v1.tar"), names)
    changed = 0
    for i in (2, 5):
        with open(os.path.join(d, f"layer{i}.bin"), "wb") as f:
            f.write(tensor(64 * MIB, 900 + i))
        changed += 64 * MIB
    p = os.path.join(d, "layer7.bin")
    t7 = bytearray(open(p, "rb").read())
    for k, at in enumerate([3 * MIB, 17 * MIB, 40 * MIB, 61 * MIB]):
        t7[at:at + MIB // 2] = tensor(MIB // 2, 7000 + k)
        changed += MIB // 2
    open(p, "wb").write(t7)
    tar(d, os.path.join(work, "v2.tar"), names)
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write("fine-tuned on the internal corpus\n")
    tar(d, os.path.join(work, "v3.tar"), ["README.md"] + names)
    return changed


def du(path):
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)


def tool_cmds(name, d):
    env = dict(os.environ)
    repo = os.path.join(d, "repo")
    if name.startswith("cairn"):
        env.update(CAIRN_REPO=repo, CAIRN_KEY_FILE=os.path.join(d, "key"), CAIRN_CACHE_DIR=os.path.join(d, "cache"))
        init = [CAIRN, "init", "-q"]
        extra = ["--chunk-avg-kib", "256"] if name == "cairn-256k" else []
        backup = lambda v: [CAIRN, "backup", "-q", "--source", "model"] + extra + ["-"]
    elif name == "restic":
        env.update(RESTIC_PASSWORD="bench-password", RESTIC_REPOSITORY=repo, RESTIC_CACHE_DIR=os.path.join(d, "cache"))
        init = ["restic", "init", "-q"]
        backup = lambda v: ["restic", "backup", "-q", "--stdin", "--stdin-filename", "model.tar"]
    else:
        env.update(BORG_PASSPHRASE="bench-password", BORG_REPO=repo, BORG_CACHE_DIR=os.path.join(d, "cache"),
                   BORG_BASE_DIR=d, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        init = ["borg", "init", "-e", "repokey-blake2"]
        backup = lambda v: ["borg", "create", "--compression", "zstd,3", f"::{v}", "-"]
    return env, repo, init, backup


def run_tool(name, work):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    env, repo, init, backup = tool_cmds(name, d)
    subprocess.run(init, env=env, check=True, stdout=subprocess.DEVNULL)
    out, prev = {}, du(repo)
    for v in ("v1", "v2", "v3"):
        with open(os.path.join(work, f"{v}.tar"), "rb") as f:
            t = time.monotonic()
            r = subprocess.run(backup(v), env=env, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            secs = time.monotonic() - t
        if r.returncode != 0:
            sys.exit(f"{name} {v} failed: {r.stderr.decode(errors='replace')[-1500:]}")
        size = du(repo)
        out[v] = {"added": size - prev, "seconds": round(secs, 2)}
        prev = size
    return out


def zstd_len(data, level):
    return len(subprocess.run(["zstd", f"-{level}", "-c", "-q"], input=data, stdout=subprocess.PIPE, check=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default="cairn,cairn-256k,restic,borg")
    args = ap.parse_args()
    missing = [p for p, b in (("restic", "restic"), ("borgbackup", "borg")) if not shutil.which(b)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(CAIRN):
        sys.exit(f"{CAIRN} missing: run `make build` first")
    os.makedirs(WORK, exist_ok=True)
    changed = build(WORK)
    # The changed bytes themselves, compressed: the floor for v2.
    d = os.path.join(WORK, "model")
    parts = [open(os.path.join(d, f"layer{i}.bin"), "rb").read() for i in (2, 5)]
    t7 = open(os.path.join(d, "layer7.bin"), "rb").read()
    parts += [t7[at:at + MIB // 2] for at in (3 * MIB, 17 * MIB, 40 * MIB, 61 * MIB)]
    floor = zstd_len(b"".join(parts), 3)
    results = {"changed_bytes": changed, "changed_zstd3": floor, "tools": {}}
    for name in args.tools.split(","):
        results["tools"][name] = run_tool(name, WORK)
        print(name, json.dumps(results["tools"][name]), flush=True)
    with open(os.path.join(WORK, "..", "models-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    mb = lambda n: f"{n / 1e6:8.1f}"
    print(f"\nchanged in v2: {changed / 1e6:.1f} MB, {floor / 1e6:.1f} MB after zstd -3 (the floor)")
    print(f"{'tool':12} {'v1 MB':>8} {'v2 +MB':>8} {'v2/floor':>8} {'v3 +MB':>8} {'v1 s':>6} {'v2 s':>6}")
    for name, r in results["tools"].items():
        print(f"{name:12} {mb(r['v1']['added'])} {mb(r['v2']['added'])} {r['v2']['added'] / floor:8.3f} "
              f"{mb(r['v3']['added'])} {r['v1']['seconds']:6.1f} {r['v2']['seconds']:6.1f}")


if __name__ == "__main__":
    main()
