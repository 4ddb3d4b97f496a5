"""kopd on Apache BookKeeper for bench/compare.py: a fresh local cluster (one ZooKeeper server and
N bookies, scripts/bookkeeper-cluster.sh, journal fsync on) per run, kopd with `storage=bookkeeper`
and its metadata in that ZooKeeper."""
import os
import subprocess

# name: (bookies, ensemble size, write quorum, ack quorum)
BACKENDS = {
    "bk111": (1, 1, 1, 1),
    "bk322": (3, 3, 2, 2),
}
# Below the ephemeral range, away from Kafka's and kopd's bench ports; bookie I on BOOKIE_PORT + I.
# The bookies' GC as BookKeeper's launch scripts set it (low pauses), not the test default.
BOOKIE_GC = "-XX:+UseG1GC -XX:MaxGCPauseMillis=10 -XX:+ParallelRefProcEnabled -XX:+DisableExplicitGC"
# The bookie settings Pulsar ships (conf/bookkeeper.conf) where they differ from BookKeeper's
# defaults on the write path: RocksDB-indexed ledger storage with a write cache flushed at
# checkpoints, 1 ms journal group wait, adds handled on the network threads. On one shared disk
# the stock storage's entry-log writeback stalls the journal's fsyncs (p99 at 34k x 1 KiB/s:
# 411 ms stock, 75-77 ms with these).
BOOKIE_CONF = "\n".join([
    "ledgerStorageClass=org.apache.bookkeeper.bookie.storage.ldb.DbLedgerStorage",
    "journalMaxGroupWaitMSec=1",
    "numAddWorkerThreads=0",
])
ZK_PORT = 24181
BOOKIE_PORT = 24182


class BkCluster:
    """One scripts/bookkeeper-cluster.sh cluster in a directory of its own."""

    def __init__(self, root, cluster_dir, bookies, heap, rss_fn):
        self.script = os.path.join(root, "scripts", "bookkeeper-cluster.sh")
        self.root = root
        self.dir = cluster_dir
        self.bookies = bookies
        self.heap = heap
        self.rss_fn = rss_fn

    def _run(self, args, timeout):
        p = subprocess.run(["bash", self.script, *args, "--dir", self.dir], cwd=self.root, timeout=timeout,
                           text=True, capture_output=True, env={**os.environ, "BK_HEAP": self.heap, "BK_GC_OPTS": BOOKIE_GC,
                                                 "BK_CONF_EXTRA": BOOKIE_CONF})
        if p.returncode != 0:
            raise RuntimeError(f"bookkeeper-cluster.sh {args[0]} exited {p.returncode}: {p.stderr[-2000:]}")
        return p.stdout.strip()

    def start(self, fresh):
        """Starts ZooKeeper and the bookies (all registered writable on return); the metadata URI."""
        args = ["start", "--zk-port", str(ZK_PORT), "--bookies", str(self.bookies),
                "--bookie-port", str(BOOKIE_PORT), "--owner-pid", str(os.getpid())]
        # The bookies can be slow to start when the machine is busy.
        return self._run(args + (["--fresh"] if fresh else []) + ["--wait-secs", "120"], timeout=300)

    def stop(self):
        self._run(["stop"], timeout=180)

    def pids(self):
        out = []
        for name in ["zk"] + [f"bookie-{i}" for i in range(self.bookies)]:
            try:
                with open(os.path.join(self.dir, f"{name}.pid")) as f:
                    out.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        return out

    def peak_rss_mib(self):
        """Sum of the peak RSS of ZooKeeper and the bookies (the JVMs)."""
        return sum(self.rss_fn(p) for p in self.pids())


def bk_target(kopd_cls, root, ports_free, rss_fn):
    """A subclass of compare.py's Kopd that runs on a fresh BookKeeper cluster."""

    class KopdBk(kopd_cls):
        def __init__(self, work, mode, cores, backend, heap):
            super().__init__(work, mode, cores)
            self.backend = backend
            self.name = f"kopd-{backend}"
            bookies, e, w, a = BACKENDS[backend]
            self.cluster = BkCluster(root, os.path.join(self.dir, "bk"), bookies, heap, rss_fn)
            self.cluster_up = False
            # The journal's fsync decides durability here: kopd's `flush` is for its local store.
            self.sets = ["storage=bookkeeper",
                         f"metadata.service.uri=zk+hierarchical://127.0.0.1:{ZK_PORT}/ledgers",
                         f"metadata.store=zk://127.0.0.1:{ZK_PORT}/kopd",
                         f"bookkeeper.ensemble.size={e}", f"bookkeeper.write.quorum={w}",
                         f"bookkeeper.ack.quorum={a}"]

        def start(self):
            if not self.cluster_up:
                ports_free([ZK_PORT] + [BOOKIE_PORT + i for i in range(self.cluster.bookies)], 60)
                os.makedirs(self.cluster.dir, exist_ok=True)
                try:
                    self.cluster.start(fresh=True)
                except Exception:
                    # A half-started cluster (ZooKeeper up, a bookie not) must not outlive the run.
                    self.cluster.stop()
                    raise
                self.cluster_up = True
            super().start()

        def restart(self):
            """kopd and the whole cluster stopped and started again on the same data, so neither
            kopd's tail cache nor a bookie's memory (memtable, read cache) holds an entry."""
            self.halt()
            self.cluster.stop()
            self.cluster_up = False
            self.cluster.start(fresh=False)
            self.cluster_up = True
            super().start()

        def aux_rss_mib(self):
            return self.cluster.peak_rss_mib()

        def stop(self):
            try:
                self.halt()
            finally:
                # Also after a failed (re)start: `stop` is safe to repeat and on a partial cluster.
                if os.path.isdir(self.cluster.dir):
                    self.cluster.stop()
                self.cluster_up = False
                super().stop()

    return KopdBk


def notes(names, heap):
    """The report's paragraph on the BookKeeper targets among `names` (empty if none)."""
    bks = [n.removeprefix("kopd-") for n in names if n != "kopd"]
    if not bks:
        return ""
    which = ", ".join(f"`{b}` ({BACKENDS[b][0]} bookie(s), ensemble/write/ack quorum "
                      f"{'/'.join(map(str, BACKENDS[b][1:]))})" for b in bks)
    return f"""- kopd on BookKeeper (fsync mode only; the run order per round is Kafka, then the kopd targets
  in column order): {which}. Each run starts a fresh local cluster with `scripts/bookkeeper-cluster.sh`
  (ZooKeeper 3.9.5 + BookKeeper 4.17.3 bookies, `journalSyncData=true`, i.e. an entry is acked after the
  journal's fsync; Pulsar's bookie settings: `{BOOKIE_CONF.replace(chr(10), ", ")}`; heap and direct memory `{heap}` per bookie, G1 as in BookKeeper's
  launch scripts: `{BOOKIE_GC}`), all on
  127.0.0.1 with their data on the same disk as the brokers'; kopd runs `storage=bookkeeper` with its
  metadata in that ZooKeeper. For the consume from disk, kopd and the whole cluster are stopped and
  started again on the same data before the page cache is dropped, so every entry is read from a
  bookie's disk. "peak RSS" is kopd's own; the ZooKeeper + bookies row sums the JVMs' peaks.
"""
