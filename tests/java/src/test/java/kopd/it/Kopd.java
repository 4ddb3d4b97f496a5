package kopd.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A kopd server process started by a test:
 * {@code kopd serve --listen 127.0.0.1:<port> --cores N --data-dir DIR}.
 * Core i listens on port+i and is broker id i.
 */
final class Kopd implements AutoCloseable {
    static final Duration START_TIMEOUT = Duration.ofSeconds(20);
    static final Duration STOP_TIMEOUT = Duration.ofSeconds(20);
    private static final AtomicInteger SEQ = new AtomicInteger();

    final int port;
    final int cores;
    final Path dataDir;
    final Path log;
    private final Process process;

    private Kopd(int port, int cores, Path dataDir, Path log, Process process) {
        this.port = port;
        this.cores = cores;
        this.dataDir = dataDir;
        this.log = log;
        this.process = process;
    }

    static Path repo() {
        return Paths.get(System.getProperty("kopd.repo", "../..")).toAbsolutePath().normalize();
    }

    static Path binary() {
        String p = System.getProperty("kopd.bin");
        Path bin = p != null ? Paths.get(p) : repo().resolve("target/release/kopd");
        return bin.toAbsolutePath().normalize();
    }

    /**
     * Arguments that put kopd on the suite's backend: KOPD_TEST_STORAGE=bookkeeper (with
     * KOPD_TEST_ZK of a running ZooKeeper + bookies) runs the same tests on BookKeeper. Each data
     * directory gets its own ZooKeeper chroot, as in tests/common/mod.rs.
     */
    static List<String> backendArgs(Path dataDir) {
        if (!"bookkeeper".equals(System.getenv("KOPD_TEST_STORAGE"))) {
            return List.of();
        }
        String zk = System.getenv().getOrDefault("KOPD_TEST_ZK", "127.0.0.1:2181");
        String[] q = (System.getenv().getOrDefault("KOPD_TEST_BK_QUORUMS", "2/2/2") + "/2/2/2").split("/");
        String flat = dataDir.toAbsolutePath().normalize().toString().replaceAll("[^A-Za-z0-9-]", "_");
        List<String> args = new ArrayList<>();
        for (String kv : List.of("storage=bookkeeper",
                "metadata.service.uri=zk+hierarchical://" + zk + "/ledgers",
                "metadata.store=zk://" + zk + "/kopd-tests/" + flat,
                "bookkeeper.ensemble.size=" + q[0],
                "bookkeeper.write.quorum=" + q[1],
                "bookkeeper.ack.quorum=" + q[2])) {
            args.add("--set");
            args.add(kv);
        }
        return args;
    }

    /** Starts kopd on fresh free ports. */
    static Kopd start(Path dataDir, int cores) throws Exception {
        return start(dataDir, cores, freePorts(cores));
    }

    /** Starts kopd with base port {@code port}; waits until every core accepts connections. */
    static Kopd start(Path dataDir, int cores, int port) throws Exception {
        return start(dataDir, cores, port, List.of());
    }

    /** Starts kopd on fresh free ports with extra {@code --set key=value} settings. */
    static Kopd start(Path dataDir, int cores, Map<String, String> settings) throws Exception {
        List<String> extra = new ArrayList<>();
        settings.forEach((k, v) -> {
            extra.add("--set");
            extra.add(k + "=" + v);
        });
        return start(dataDir, cores, freePorts(cores), extra);
    }

    /**
     * Starts kopd with base port {@code port} and extra command-line arguments; waits until every
     * core accepts connections.
     */
    static Kopd start(Path dataDir, int cores, int port, List<String> extraArgs) throws Exception {
        Path bin = binary();
        if (!Files.isExecutable(bin)) {
            fail("kopd binary not found at " + bin
                    + " (build it with `cargo build --release`, or pass -Dkopd.bin=...)");
        }
        Path logDir = Paths.get(System.getProperty("kopd.logs", "target/kopd-logs"));
        Files.createDirectories(logDir);
        Path log = logDir.resolve("kopd-" + ProcessHandle.current().pid() + "-"
                + SEQ.incrementAndGet() + ".log").toAbsolutePath();
        List<String> cmd = new ArrayList<>(List.of(bin.toString(), "serve",
                "--listen", "127.0.0.1:" + port,
                "--cores", Integer.toString(cores),
                "--data-dir", dataDir.toAbsolutePath().toString()));
        cmd.addAll(backendArgs(dataDir));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
        Process proc = pb.start();
        Kopd k = new Kopd(port, cores, dataDir, log, proc);
        try {
            k.awaitListening();
        } catch (Throwable t) {
            k.kill();
            throw t;
        }
        return k;
    }

    private void awaitListening() throws Exception {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        for (int i = 0; i < cores; i++) {
            while (true) {
                if (!process.isAlive()) {
                    fail("kopd exited with status " + process.exitValue()
                            + " before listening on 127.0.0.1:" + (port + i) + "\n" + logTail());
                }
                try (Socket s = new Socket()) {
                    s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port + i), 500);
                    break;
                } catch (IOException notYet) {
                    if (System.nanoTime() > deadline) {
                        fail("kopd did not listen on 127.0.0.1:" + (port + i) + " within "
                                + START_TIMEOUT.toSeconds() + " s\n" + logTail());
                    }
                    Thread.sleep(100);
                }
            }
        }
    }

    String bootstrap() {
        return "127.0.0.1:" + port;
    }

    Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        return Admin.create(p);
    }

    /** Producer settings: Kafka's defaults (idempotence on, acks=all) plus bounded timeouts. */
    Properties producerProps() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return p;
    }

    /** Consumer settings for assign()/seek() use: no group, no auto commit. */
    Properties consumerProps() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return p;
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /**
     * Sends SIGTERM and waits (bounded) for the process to exit.
     * @return the exit status, or fails the test if it did not exit in time (then it is killed).
     */
    int stop() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
            kill();
            fail("kopd did not exit within " + STOP_TIMEOUT.toSeconds() + " s of SIGTERM\n" + logTail());
        }
        return process.exitValue();
    }

    void kill() {
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroy();
            try {
                if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                    kill();
                }
            } catch (InterruptedException e) {
                kill();
                Thread.currentThread().interrupt();
            }
        }
    }

    String logTail() {
        try {
            List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
            List<String> tail = new ArrayList<>(lines.subList(Math.max(0, lines.size() - 40), lines.size()));
            return "--- kopd log " + log + " (last " + tail.size() + " lines) ---\n" + String.join("\n", tail);
        } catch (IOException e) {
            return "(no kopd log: " + e + ")";
        }
    }

    /** Finds {@code n} consecutive free TCP ports on 127.0.0.1 and returns the first. */
    static int freePorts(int n) throws IOException {
        InetAddress lo = InetAddress.getLoopbackAddress();
        for (int attempt = 0; attempt < 200; attempt++) {
            int base = ThreadLocalRandom.current().nextInt(20000, 60000 - n);
            List<ServerSocket> held = new ArrayList<>();
            boolean ok = true;
            try {
                for (int i = 0; i < n; i++) {
                    try {
                        ServerSocket s = new ServerSocket();
                        s.setReuseAddress(false);
                        s.bind(new InetSocketAddress(lo, base + i));
                        held.add(s);
                    } catch (IOException busy) {
                        ok = false;
                        break;
                    }
                }
            } finally {
                for (ServerSocket s : held) {
                    s.close();
                }
            }
            if (ok) {
                return base;
            }
        }
        throw new IOException("no " + n + " consecutive free ports found");
    }
}
