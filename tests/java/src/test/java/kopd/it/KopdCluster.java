package kopd.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.Node;

/**
 * A kopd cluster for a test: one ZooKeeper and three bookies run by
 * scripts/bookkeeper-cluster.sh on free ports, and kopd nodes in cluster mode over them
 * ({@code cluster.name}). Each node has its own data directory (where its node.id is kept), so
 * a node restarted on the same directory is the same node, possibly on new ports.
 */
final class KopdCluster implements AutoCloseable {
    static final int CORES = 2;
    static final int SESSION_MS = 4000;

    final Path root;
    private final int zkPort;
    private final String chroot;
    private final Path bkDir;
    private boolean bkRunning;
    final List<Path> dirs = new ArrayList<>();
    final List<Kopd> nodes = new ArrayList<>();

    private KopdCluster(Path root, int zkPort, String chroot) throws java.io.IOException {
        this.root = root;
        this.zkPort = zkPort;
        this.chroot = chroot;
        // Outside the test's @TempDir: a test stuck past its timeout has that directory deleted
        // under it, and the script (or its watchdog) could no longer find the servers' pids.
        this.bkDir = Files.createTempDirectory("kopd-java-bk-");
    }

    /** ZooKeeper + 3 bookies, then {@code n} kopd nodes. */
    static KopdCluster start(Path root, String name, int n) throws Exception {
        Exception last = null;
        // A port found free can be taken before the server binds it: retry on fresh ports.
        for (int attempt = 0; attempt < 3; attempt++) {
            int zk = Kopd.freePorts(4);
            KopdCluster c = new KopdCluster(root, zk, "/" + name);
            try {
                c.startBookKeeper();
                for (int i = 0; i < n; i++) {
                    c.addNode();
                }
                return c;
            } catch (Exception e) {
                last = e;
                c.close();
            }
        }
        throw last;
    }

    private void startBookKeeper() throws Exception {
        Files.createDirectories(bkDir);
        Util.ToolResult r = script("start", "--fresh", "--zk-port", Integer.toString(zkPort), "--bookies", "3",
                "--bookie-port", Integer.toString(zkPort + 1),
                "--owner-pid", Long.toString(ProcessHandle.current().pid()));
        bkRunning = true;
        if (r.status() != 0) {
            throw new IllegalStateException("bookkeeper-cluster.sh start failed: " + r.describe());
        }
    }

    private Util.ToolResult script(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("bash", Kopd.repo().resolve("scripts/bookkeeper-cluster.sh").toString()));
        cmd.addAll(List.of(args));
        cmd.addAll(List.of("--dir", bkDir.toString()));
        return Util.runTool(root, 180, null, cmd);
    }

    List<String> nodeArgs() {
        List<String> args = new ArrayList<>();
        for (String kv : List.of("storage=bookkeeper",
                "metadata.service.uri=zk+hierarchical://127.0.0.1:" + zkPort + "/ledgers",
                "metadata.store=zk://127.0.0.1:" + zkPort + chroot,
                "cluster.name=" + chroot.substring(1),
                "zookeeper.session.timeout.ms=" + SESSION_MS,
                "cluster.poll.interval.ms=100",
                "group.initial.rebalance.delay.ms=0",
                "admin.listen=",
                "shutdown.timeout.ms=10000")) {
            args.add("--set");
            args.add(kv);
        }
        return args;
    }

    /** Starts a new node; returns its index. */
    int addNode() throws Exception {
        Path dir = root.resolve("node" + dirs.size());
        Files.createDirectories(dir);
        dirs.add(dir);
        nodes.add(Kopd.start(dir, CORES, Kopd.freePorts(CORES), nodeArgs()));
        return nodes.size() - 1;
    }

    /** Starts stopped node {@code i} again on its data directory (fresh ports). */
    void restart(int i) throws Exception {
        if (nodes.get(i) != null && nodes.get(i).isAlive()) {
            fail("node " + i + " is still running");
        }
        nodes.set(i, Kopd.start(dirs.get(i), CORES, Kopd.freePorts(CORES), nodeArgs()));
    }

    /** SIGTERM: the node hands its partitions over, then exits; fails unless it exits 0. */
    long stop(int i) throws Exception {
        long t = System.nanoTime();
        int status = nodes.get(i).stop();
        if (status != 0) {
            fail("node " + i + " exited " + status + "\n" + nodes.get(i).logTail());
        }
        return TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t);
    }

    void kill9(int i) {
        nodes.get(i).kill();
    }

    /** The node index serving broker {@code b} (core c of a node listens on its port + c). */
    int nodeOf(Node b) {
        for (int i = 0; i < nodes.size(); i++) {
            Kopd k = nodes.get(i);
            if (k != null && k.isAlive() && b.port() >= k.port && b.port() < k.port + CORES) {
                return i;
            }
        }
        return -1;
    }

    /** Bootstrap list of every running node. */
    String bootstrap() {
        return nodes.stream().filter(k -> k != null && k.isAlive()).map(Kopd::bootstrap)
                .collect(Collectors.joining(","));
    }

    Set<Integer> live() {
        Set<Integer> s = new HashSet<>();
        for (int i = 0; i < nodes.size(); i++) {
            if (nodes.get(i) != null && nodes.get(i).isAlive()) {
                s.add(i);
            }
        }
        return s;
    }

    Admin admin(int via) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, nodes.get(via).bootstrap());
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        return Admin.create(p);
    }

    /** Idempotent acks=all producer (Kafka's defaults) bootstrapped from every running node. */
    Properties producerProps() {
        Properties p = nodes.get(live().iterator().next()).producerProps();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "50");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        p.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "5000");
        return p;
    }

    /** Consumer properties bootstrapped from node {@code via} only. */
    Properties consumerProps(int via) {
        Properties p = nodes.get(via).consumerProps();
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(ConsumerConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        return p;
    }

    String logs() {
        StringBuilder b = new StringBuilder();
        for (Kopd k : nodes) {
            if (k != null) {
                b.append(k.logTail()).append('\n');
            }
        }
        return b.toString();
    }

    @Override
    public void close() {
        for (Kopd k : nodes) {
            if (k != null) {
                k.kill();
            }
        }
        if (bkRunning) {
            try {
                if (script("stop").status() == 0) {
                    Util.deleteTree(bkDir);
                }
            } catch (Exception ignored) {
                // The cluster stops itself once this JVM is gone (--owner-pid).
            }
            bkRunning = false;
        }
    }
}
