"""Copying a repository to a second place: cairn copy vs restic copy, same
corpus, same run.

Each tool backs up the corpus (a tar of system files, peers.py's) into a
local source repository, then copies it into a fresh target made to match
(cairn: `init --copy-from`, same keys and chunker, so packs move byte for
byte; restic 0.14: `init --from-repo --copy-chunker-params`, whose `copy`
still decrypts and re-encrypts every blob), twice: local -> local and
local -> S3 (moto, on 127.0.0.1). Figures: wall seconds and peak RSS (GNU
time) of the copy command alone, throughput = corpus bytes / seconds, and
the seconds of a second copy (nothing to do). Target `reseal` (cairn only):
local -> local into a repository that is NOT copy-compatible, so every blob
is decrypted and sealed again (what restic's copy always does).

Usage: python3 benches/peers/copy.py [--size-mb 1024] [--tools cairn,restic]
           [--targets local,s3,reseal]
Needs moto_server ($CAIRN_MOTO_SERVER or .venv/bin/moto_server) for s3.
Results: .work/bench/copy-results.json, and a table on stdout.
"""
import argparse, json, os, shutil, socket, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import CAIRN, ROOT, build_corpus, timed  # noqa: E402

WORK = os.path.join(ROOT, ".work", "bench", "copy")


class Moto:
    def __init__(self):
        binary = os.environ.get("CAIRN_MOTO_SERVER") or os.path.join(ROOT, ".venv", "bin", "moto_server")
        if not os.path.exists(binary):
            sys.exit(f"moto_server not found at {binary}: run `make test` or set CAIRN_MOTO_SERVER")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("moto_server did not start")

    def bucket(self, name):
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")).read()
        return name

    def env(self):
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run(cmd, env, stdin=None):
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
    try:
        r = subprocess.run(cmd, env=env, stdin=fin, capture_output=True)
    finally:
        if stdin:
            fin.close()
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode(errors='replace')[-2000:]}")
    return r.stdout


class Cairn:
    name = "cairn"

    def __init__(self, work, corpus):
        self.work = work
        self.src = self.repo("src", os.path.join(work, "src"))
        run([CAIRN, "init", "-q", "--pack-size-mib", "16"], self.src["env"])
        run([CAIRN, "backup", "-q", "--kind", "tar", "--source", "corpus", corpus], self.src["env"])

    def repo(self, name, url, extra=None):
        env = dict(os.environ, CAIRN_REPO=url, CAIRN_KEY_FILE=os.path.join(self.work, f"{name}.key"),
                   CAIRN_CACHE_DIR=os.path.join(self.work, "cache"), **(extra or {}))
        cfg = os.path.join(self.work, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(f"repo = {json.dumps(url)}\nkey_file = {json.dumps(env['CAIRN_KEY_FILE'])}\n")
        return {"env": env, "cfg": cfg}

    def target(self, name, url, extra, compatible=True):
        t = self.repo(name, url, extra)
        run([CAIRN, "init", "-q"] + (["--copy-from-config", self.src["cfg"]] if compatible else []), t["env"])
        return t

    def copy_cmd(self, t):
        return [CAIRN, "-q", "copy", "--to-config", t["cfg"]], dict(self.src["env"], **{
            k: v for k, v in t["env"].items() if k.startswith("AWS_")})


class Restic:
    name = "restic"

    def __init__(self, work, corpus):
        self.work = work
        self.pw = os.path.join(work, "pw")
        with open(self.pw, "w") as f:
            f.write("bench\n")
        self.src = self.repo(os.path.join(work, "src"))
        run(["restic", "init", "-q"], self.src["env"])
        run(["restic", "backup", "-q", "--stdin", "--stdin-filename", "corpus.tar"], self.src["env"], stdin=corpus)

    def repo(self, url, extra=None):
        return {"env": dict(os.environ, RESTIC_REPOSITORY=url, RESTIC_PASSWORD_FILE=self.pw,
                            RESTIC_CACHE_DIR=os.path.join(self.work, "cache"), **(extra or {})), "url": url}

    def target(self, name, url, extra):
        url = url if not url.startswith("s3://") else "s3:" + extra["AWS_ENDPOINT_URL"] + "/" + url[5:]
        t = self.repo(url, extra)
        run(["restic", "init", "-q", "--from-repo", self.src["url"], "--from-password-file", self.pw,
             "--copy-chunker-params"], t["env"])
        return t

    def copy_cmd(self, t):
        return ["restic", "copy", "-q", "--from-repo", self.src["url"], "--from-password-file", self.pw], t["env"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--tools", default="cairn,restic")
    ap.add_argument("--targets", default="local,s3,reseal")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    corpus = os.path.join(ROOT, ".work", "bench", f"corpus-{a.size_mb}.tar")
    build_corpus(corpus, a.size_mb)
    size = os.path.getsize(corpus)
    targets = a.targets.split(",")
    moto = Moto() if "s3" in targets else None
    rows = []
    try:
        for name in a.tools.split(","):
            work = os.path.join(WORK, name)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            tool = {"cairn": Cairn, "restic": Restic}[name](work, corpus)
            for target in targets:
                if target == "reseal":
                    if name != "cairn":
                        continue
                    t = tool.target("dst-reseal", os.path.join(work, "dst-reseal"), {}, compatible=False)
                elif target == "local":
                    t = tool.target("dst-local", os.path.join(work, "dst-local"), {})
                else:
                    bucket = moto.bucket(f"{name}-{int(time.time())}")
                    t = tool.target("dst-s3", f"s3://{bucket}/repo", moto.env())
                cmd, env = tool.copy_cmd(t)
                secs, rss = timed(cmd, env=env)
                again, _ = timed(cmd, env=env)
                row = {"tool": name, "target": target, "corpus_bytes": size, "s": round(secs, 2),
                       "mb_s": round(size / 1e6 / secs, 1), "rss_mb": round(rss, 1), "second_s": round(again, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if moto:
            moto.stop()
    with open(os.path.join(ROOT, ".work", "bench", "copy-results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"\ncorpus: {size / 1e6:.0f} MB\n")
    print("| tool | target | copy | throughput | peak RSS | second copy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['tool']} | {r['target']} | {r['s']} s | {r['mb_s']} MB/s | {r['rss_mb']} MB | {r['second_s']} s |")
    by = {(r["tool"], r["target"]): r for r in rows}
    for target in targets:
        if ("cairn", target) in by and ("restic", target) in by:
            print(f"{target}: cairn {by[('restic', target)]['s'] / by[('cairn', target)]['s']:.1f}x restic's throughput")


if __name__ == "__main__":
    main()
